// Package pgtest runs throwaway PostgreSQL servers for tests: initdb into a fresh temporary
// directory, postgres on a free loopback port with durability switched off, and a new empty
// database for each test. Run as root, the server runs as the "postgres" system user,
// because PostgreSQL refuses to run as root.
package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Errors of finding and starting PostgreSQL.
var (
	// ErrNotInstalled means initdb and postgres were found neither on PATH nor under
	// /usr/lib/postgresql/<version>/bin.
	ErrNotInstalled = errors.New("pgtest: PostgreSQL (initdb, postgres) not installed")
	// ErrStart means the server could not be set up or did not come up.
	ErrStart = errors.New("pgtest: start")
)

// User is the system user the server runs as when the tests run as root.
const User = "postgres"

const (
	startTimeout = 90 * time.Second // generous: two shared cores under a full test run
	stopTimeout  = 30 * time.Second
	maxLogBytes  = 1 << 20
)

// FindBinaries returns the directory holding initdb and postgres: the one on PATH, else the
// newest /usr/lib/postgresql/<version>/bin (Debian keeps them off PATH).
func FindBinaries() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real
		}
		dir := filepath.Dir(p)
		if isExec(filepath.Join(dir, "postgres")) {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int { return versionOf(b) - versionOf(a) })
	for _, dir := range dirs {
		if isExec(filepath.Join(dir, "initdb")) && isExec(filepath.Join(dir, "postgres")) {
			return dir, nil
		}
	}
	return "", ErrNotInstalled
}

func versionOf(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

func isExec(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// Server is one running PostgreSQL server. Its databases, data and socket live in a
// temporary directory that Stop removes.
type Server struct {
	bin  string
	base string
	port int
	cred *syscall.Credential
	cmd  *exec.Cmd
	logs *logBuffer
	done chan struct{} // closed when the postmaster has exited
	werr error         // the postmaster's exit status, set before done closes

	mu    sync.Mutex // guards admin and next
	admin *pgx.Conn
	next  int
}

// New starts a server for the test and stops it when the test ends. It skips the test,
// saying why, only when PostgreSQL is not installed; any other problem fails it.
func New(t testing.TB) *Server {
	t.Helper()
	s, err := Start(t.Context())
	if errors.Is(err, ErrNotInstalled) {
		t.Skipf("skipping the PostgreSQL run: %v (install postgresql, or put initdb and postgres on PATH)", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Error(err)
		}
	})
	return s
}

// Start initializes a cluster in a new temporary directory and starts postgres on it. The
// caller must Stop the server.
func Start(ctx context.Context) (*Server, error) {
	bin, err := FindBinaries()
	if err != nil {
		return nil, err
	}
	cred, err := credential()
	if err != nil {
		return nil, err
	}
	base, err := os.MkdirTemp("", "reelway-pg-")
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrStart, err)
	}
	s := &Server{bin: bin, base: base, cred: cred, logs: &logBuffer{}}
	if cred != nil {
		if err := os.Chown(base, int(cred.Uid), int(cred.Gid)); err != nil {
			_ = os.RemoveAll(base)
			return nil, fmt.Errorf("%w: hand %s to %s: %w", ErrStart, base, User, err)
		}
	}
	if err := s.initdb(ctx); err != nil {
		_ = os.RemoveAll(base)
		return nil, err
	}
	// A free port can be taken between probing and binding; try a few.
	for attempt := 0; ; attempt++ {
		err = s.start(ctx)
		if err == nil {
			return s, nil
		}
		if attempt == 4 || !strings.Contains(s.logs.String(), "could not bind") {
			_ = os.RemoveAll(base)
			return nil, err
		}
	}
}

// credential returns the user to run PostgreSQL as: nil (the current user) unless root.
func credential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup(User)
	if err != nil {
		return nil, fmt.Errorf("%w: running as root needs the %q user to run PostgreSQL: %w", ErrStart, User, err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("%w: uid of %s: %w", ErrStart, User, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("%w: gid of %s: %w", ErrStart, User, err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func (s *Server) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(s.bin, name), args...)
	cmd.Dir = s.base
	// A fixed environment: no locale or PG* variables leak in from the caller.
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + s.base, "LC_ALL=C", "TZ=UTC"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	return cmd
}

func (s *Server) dataDir() string { return filepath.Join(s.base, "data") }

// initdb creates the cluster: UTF-8, trust authentication for the "postgres" superuser,
// and no fsync (the data is thrown away). The default collation is ICU's en-US, a language
// order like production databases have, so that code relying on byte order without
// asking for it (COLLATE "C") fails here; C.UTF-8 and then plain C are the fallbacks where
// ICU or the locale are missing.
func (s *Server) initdb(ctx context.Context) error {
	var last error
	for _, locale := range [][]string{
		{"--locale=C.UTF-8", "--locale-provider=icu", "--icu-locale=en-US"},
		{"--locale=C.UTF-8"},
		{"--no-locale"},
	} {
		var out bytes.Buffer
		args := append([]string{"-D", s.dataDir(), "-U", "postgres", "--auth=trust", "-E", "UTF8",
			"--no-sync", "--no-instructions"}, locale...)
		cmd := s.command(ctx, "initdb", args...)
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			last = fmt.Errorf("%w: initdb %s: %w\n%s", ErrStart, strings.Join(locale, " "), err, out.String())
			_ = os.RemoveAll(s.dataDir())
			continue
		}
		return nil
	}
	return last
}

// start runs postgres on a free port and waits until it accepts connections.
func (s *Server) start(ctx context.Context) error {
	port, err := freePort()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrStart, err)
	}
	s.port = port
	s.logs.Reset()
	// Not CommandContext: the server outlives the context that started it, until Stop.
	cmd := s.command(context.WithoutCancel(ctx), "postgres", "-D", s.dataDir(), "-k", s.base,
		"-p", strconv.Itoa(port), "-c", "listen_addresses=127.0.0.1",
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
		"-c", "max_connections=200")
	cmd.Stdout, cmd.Stderr = s.logs, s.logs
	// The server must not outlive a test binary that dies without running Stop.
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	cmd.SysProcAttr.Setpgid = true
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%w: postgres: %w", ErrStart, err)
	}
	s.cmd, s.done = cmd, make(chan struct{})
	go func() {
		s.werr = cmd.Wait()
		close(s.done)
	}()

	deadline := time.Now().Add(startTimeout)
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		conn, err := pgx.Connect(cctx, s.URL("postgres"))
		cancel()
		if err == nil {
			s.admin = conn
			return nil
		}
		select {
		case <-s.done:
			return fmt.Errorf("%w: postgres exited: %v\n%s", ErrStart, s.werr, s.logs.String())
		case <-ctx.Done():
			s.kill()
			return fmt.Errorf("%w: %w", ErrStart, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.kill()
			return fmt.Errorf("%w: postgres not accepting connections after %v: %w\n%s", ErrStart, startTimeout, err, s.logs.String())
		}
	}
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// URL is the connection URL of database db on this server.
func (s *Server) URL(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.port, db)
}

// CreateDatabase creates a new empty database and returns its URL.
func (s *Server) CreateDatabase(ctx context.Context) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.next++
	name := "test_" + strconv.Itoa(s.next)
	if _, err := s.admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", fmt.Errorf("pgtest: create database %s: %w", name, err)
	}
	return s.URL(name), nil
}

// NewDatabase creates a new empty database for the test and returns its URL.
func (s *Server) NewDatabase(t testing.TB) string {
	t.Helper()
	url, err := s.CreateDatabase(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return url
}

// Logs returns what the server has written so far (the tail when it wrote a lot).
func (s *Server) Logs() string { return s.logs.String() }

// Stop shuts the server down (fast shutdown: open sessions are ended) and removes its
// directory.
func (s *Server) Stop() error {
	s.mu.Lock()
	if s.admin != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = s.admin.Close(ctx)
		cancel()
		s.admin = nil
	}
	s.mu.Unlock()
	var err error
	if s.cmd != nil {
		_ = s.cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-s.done:
		case <-time.After(stopTimeout):
			s.kill()
			err = fmt.Errorf("pgtest: postgres did not shut down within %v; killed", stopTimeout)
		}
	}
	if rerr := os.RemoveAll(s.base); rerr != nil && err == nil {
		err = fmt.Errorf("pgtest: remove %s: %w", s.base, rerr)
	}
	return err
}

// kill ends the postmaster at once; its backends notice and exit by themselves.
func (s *Server) kill() {
	_ = s.cmd.Process.Kill()
	<-s.done
}

// logBuffer collects the server's output for error messages, keeping at most maxLogBytes.
type logBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - maxLogBytes; over > 0 {
		b.buf = slices.Delete(b.buf, 0, over)
	}
	return len(p), nil
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

func (b *logBuffer) Reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = nil
}
