package transcoder

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"
)

// waitDelay bounds how long a killed ffmpeg may hold its pipes open before Wait gives up.
const waitDelay = 5 * time.Second

// maxReason bounds the ffmpeg/ffprobe message passed on to callers.
const maxReason = 300

// run executes one ffmpeg or ffprobe command. It is killed when ctx ends. A non-zero exit
// is ErrUndecodable carrying the tool's first error line (with the source's path replaced
// by "source" so no server path leaks), except for output-side failures, which are plain
// errors: the input is not to blame then.
func (s *Service) run(ctx context.Context, bin string, args []string, stdout io.Writer, src string) error {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.WaitDelay = waitDelay
	cmd.Stdout = stdout
	stderr := &headBuffer{max: 16 << 10}
	cmd.Stderr = stderr
	err := cmd.Run()
	if err == nil {
		// ffmpeg decodes what it can of a cut-off file and exits 0; the demuxer's "partial
		// file" error is the only sign the upload lost its tail, and such a video must fail
		// rather than play a fraction of its length.
		if strings.Contains(stderr.String(), "partial file") {
			return fmt.Errorf("%w: source is truncated (%s)", ErrUndecodable, firstLine(stderr.String(), src))
		}
		return nil
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("%s: %w", filepath.Base(bin), ctxErr)
	}
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		return fmt.Errorf("run %s: %w", filepath.Base(bin), err)
	}
	if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		// Killed from outside (OOM killer, an operator): the input is not to blame and
		// another attempt may well succeed, so this must not read as undecodable.
		return fmt.Errorf("%w: %s", ErrKilled, ws.Signal())
	}
	reason := firstLine(stderr.String(), src)
	if reason == "" {
		reason = exit.String()
	}
	if outputFault(stderr.String()) {
		return fmt.Errorf("%s failed: %s", filepath.Base(bin), reason)
	}
	return fmt.Errorf("%w: %s", ErrUndecodable, reason)
}

// outputFault reports errors of the output side (disk full, permissions), which a retry
// on another day or machine may not hit.
func outputFault(stderr string) bool {
	return strings.Contains(stderr, "No space left on device") ||
		strings.Contains(stderr, "Permission denied") ||
		strings.Contains(stderr, "Cannot allocate memory")
}

// logPrefix matches ffmpeg's "[mov,mp4,m4a @ 0x55f3…] " context prefix.
var logPrefix = regexp.MustCompile(`^\[[^\]]* @ 0x[0-9a-f]+\]\s*`)

func firstLine(stderr, src string) string {
	for line := range strings.Lines(stderr) {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if src != "" {
			line = strings.ReplaceAll(line, src, "source")
		}
		line = logPrefix.ReplaceAllString(line, "")
		if len(line) > maxReason {
			line = line[:maxReason] + "…"
		}
		return line
	}
	return ""
}

// headBuffer keeps the first max bytes written to it: ffmpeg's first error is the cause,
// what follows is fallout.
type headBuffer struct {
	max int
	buf []byte
}

func (b *headBuffer) Write(p []byte) (int, error) {
	if room := b.max - len(b.buf); room > 0 {
		b.buf = append(b.buf, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (b *headBuffer) String() string { return string(b.buf) }

// lineWriter calls fn with each complete line written to it.
type lineWriter struct {
	fn      func(line string)
	partial []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			if len(w.partial) < 4096 {
				w.partial = append(w.partial, p...)
			}
			break
		}
		line := append(w.partial, p[:i]...)
		w.partial = w.partial[:0]
		w.fn(strings.TrimRight(string(line), "\r"))
		p = p[i+1:]
	}
	return n, nil
}
