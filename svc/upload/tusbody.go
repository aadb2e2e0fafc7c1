package upload

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"time"

	"connectrpc.com/connect"
	metadatav1 "github.com/reelway/reelway/gen/reelway/metadata/v1"
	"github.com/tus/tusd/v2/pkg/handler"
)

// ErrSizeExceeded means a tus request body carries more bytes than its upload still
// needs: more than Upload-Length at creation, more than the rest of the upload in a PATCH
// (tus 413 ERR_UPLOAD_SIZE_EXCEEDED).
var ErrSizeExceeded = errors.New("upload: request body is longer than the upload")

// maxEndProbes bounds the empty reads tolerated while checking that a body ends.
const maxEndProbes = 100

// carriesBytes reports whether a tus request brings bytes for an upload: a PATCH to an
// upload, or a creation with bytes (creation-with-upload). Requests that tusd refuses
// anyway (wrong version or content type) do not count.
func carriesBytes(r *http.Request, id string) bool {
	if r.Header.Get("Tus-Resumable") != tusResumable || r.Header.Get("Content-Type") != tusOctetStream {
		return false
	}
	return (r.Method == http.MethodPatch && id != "") || (r.Method == http.MethodPost && id == "")
}

// checkCreationBody refuses a creation-with-upload whose body, by its Content-Length, is
// longer than its Upload-Length, before anything is created. tusd would create the
// upload and its video first, then refuse the bytes without telling the client the
// upload's URL, leaving both behind until they expire.
func checkCreationBody(r *http.Request) error {
	size, err := strconv.ParseInt(r.Header.Get("Upload-Length"), 10, 64)
	if err != nil || r.ContentLength <= size {
		return nil // tusd explains a missing or malformed Upload-Length
	}
	return fmt.Errorf("%w: %d bytes sent, Upload-Length is %d", ErrSizeExceeded, r.ContentLength, size)
}

// boundedBodyKey finds a request's boundedBody in its context.
type boundedBodyKey struct{}

// boundedBody is the body of a tus request whose length is not known up front (chunked,
// or HTTP/2 without Content-Length), and of every creation-with-upload. The upload's store
// sets its limit, the bytes the upload still needs, when it starts writing. The body then passes at most that many
// bytes, and holds back the read that reaches the limit until it knows the body ends
// there: a body longer than its upload fails (ErrSizeExceeded) before its last bytes are
// stored, so its first bytes never complete the upload as if they were the whole file.
type boundedBody struct {
	body io.ReadCloser
	// creation is set for a creation-with-upload request, whose upload and video are
	// removed when the body is too long or breaks off (stalled, cut).
	creation bool
	// need is the limit the store set, left how many bytes may still pass; -1 until
	// the store sets the limit.
	need, left int64
	err        error
	over       bool
	// broken is the error that ended a read of the request before its end: the client
	// stalled or went away.
	broken error
}

var _ io.ReadCloser = (*boundedBody)(nil)

func newBoundedBody(body io.ReadCloser, creation bool) *boundedBody {
	return &boundedBody{body: body, creation: creation, need: -1, left: -1}
}

// limit sets how many more bytes the body may carry.
func (b *boundedBody) limit(n int64) { b.need, b.left = max(n, 0), max(n, 0) }

// overran reports whether the body turned out longer than its limit.
func (b *boundedBody) overran() bool { return b.over }

// failed returns the error that ended the body before its end, or nil.
func (b *boundedBody) failed() error { return b.broken }

// read reads the request body, noting an error that is not its end.
func (b *boundedBody) read(p []byte) (int, error) {
	n, err := b.body.Read(p)
	if err != nil && err != io.EOF && b.broken == nil {
		b.broken = err
	}
	return n, err
}

func (b *boundedBody) Read(p []byte) (int, error) {
	switch {
	case b.err != nil:
		return 0, b.err
	case b.left < 0:
		return b.read(p)
	case b.left == 0:
		b.err = b.end()
		return 0, b.err
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.read(p)
	b.left -= int64(n)
	if b.left > 0 || err != nil {
		return n, err
	}
	// The read reached the limit: pass it on only if the body ends here.
	if b.err = b.end(); b.err != io.EOF {
		return 0, b.err
	}
	return n, nil
}

// end checks that the body has nothing more: io.EOF if so, a tus 413 if it goes on, or
// the error that stopped the check (a dropped or stalled client).
func (b *boundedBody) end() error {
	var one [1]byte
	for range maxEndProbes {
		n, err := b.read(one[:])
		switch {
		case n > 0:
			b.over = true
			return tusError(fmt.Errorf("%w: it goes on past the %d bytes the upload still needs", ErrSizeExceeded, b.need))
		case err != nil:
			return err
		}
	}
	return io.ErrNoProgress
}

func (b *boundedBody) Close() error { return b.body.Close() }

// requestBody returns the boundedBody of the request ctx belongs to, or nil.
func requestBody(ctx context.Context) *boundedBody {
	b, _ := ctx.Value(boundedBodyKey{}).(*boundedBody)
	return b
}

// discardCreated removes an upload whose creation request failed in its body (too long,
// stalled, cut off), with its video: tusd's error answer carries no Location, so no client
// can resume or cancel it. The video is deleted first; if metadata cannot be reached, the
// upload is left for the expiry loop, which fails the video later.
func (t *tusServer) discardCreated(ctx context.Context, up handler.Upload, id string, reason error) {
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), tusStepTimeout)
	defer cancel()
	log := t.s.log.With("video_id", id)
	if _, err := t.s.videos.DeleteVideo(fctx, &metadatav1.DeleteVideoRequest{Id: id}); err != nil && connect.CodeOf(err) != connect.CodeNotFound {
		log.WarnContext(ctx, "upload.tus_discard", "err", err)
		return
	}
	if err := t.files.AsTerminatableUpload(unwrapUpload(up)).Terminate(fctx); err != nil {
		log.WarnContext(ctx, "upload.tus_discard", "err", err)
	}
	t.removeHash(id)
	t.publishFailed(fctx, id, "upload aborted: "+reason.Error())
	log.InfoContext(ctx, "upload.tus_discarded", "reason", reason.Error())
}

// stallBody is a tus request body whose read that ends at tusd's network timeout (the
// idle timeout) fails with a tus 408 ERR_READ_TIMEOUT. tusd would answer a client that
// stopped sending with 500, as if the server had failed. The bytes that arrived before
// the stall stay stored, so the client resumes from the offset HEAD reports.
type stallBody struct {
	body io.ReadCloser
	idle time.Duration
}

var _ io.ReadCloser = (*stallBody)(nil)

func (b *stallBody) Read(p []byte) (int, error) {
	n, err := b.body.Read(p)
	if err != nil && timedOut(err) {
		return n, stallError{tusError(idleError(b.idle))}
	}
	return n, err
}

func (b *stallBody) Close() error { return b.body.Close() }

// stallError is the error of a stalled tus body. tusd answers with the handler.Error it
// wraps as it is (it is no net.Error, so tusd does not turn it back into its own 500),
// and it still is os.ErrDeadlineExceeded, so tusd does not push the connection's read
// deadline further: the answer goes out at once, and the connection, whose unread body
// cannot be skipped, is closed instead of waiting another idle timeout for it.
type stallError struct{ tus handler.Error }

func (e stallError) Error() string   { return e.tus.Error() }
func (e stallError) Unwrap() []error { return []error{e.tus, os.ErrDeadlineExceeded} }
