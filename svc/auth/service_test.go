package auth_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	authv1 "github.com/reelway/reelway/gen/reelway/auth/v1"
	"github.com/reelway/reelway/gen/reelway/auth/v1/authv1connect"
	"github.com/reelway/reelway/svc/auth"
	"github.com/reelway/reelway/svc/events"
	"github.com/reelway/reelway/svc/rpc"
	"golang.org/x/crypto/bcrypt"
)

func protocols() []struct {
	name string
	opts []connect.ClientOption
} {
	return []struct {
		name string
		opts []connect.ClientOption
	}{
		{"connect", nil},
		{"grpc", []connect.ClientOption{connect.WithGRPC()}},
	}
}

// logBuffer collects every log line of the service and its server, to check that no
// secret material is ever written.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type harness struct {
	secret  []byte
	bus     *events.Bus
	logs    *logBuffer
	baseURL string
	http    *http.Client
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	ctx := t.Context()
	logs := &logBuffer{}
	log := slog.New(rpc.LogHandler{Handler: slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})})
	dir := t.TempDir()

	ns, err := events.StartServer("127.0.0.1", -1, dir) // -1: a free port
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	bus, err := events.Connect(ctx, ns.URL(), "test", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bus.Close(context.Background()) })
	if err := bus.EnsureStream(ctx, time.Hour, 1<<30); err != nil {
		t.Fatal(err)
	}

	secret := []byte("test-secret-test-secret-test-sec")
	// The minimum bcrypt cost keeps the race-instrumented tests fast; the restart test
	// below runs at the default cost.
	svc, err := auth.Open(ctx, filepath.Join(dir, "data"), secret, log, bus, auth.WithBcryptCost(bcrypt.MinCost))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := svc.Close(); err != nil {
			t.Error(err)
		}
	})

	srv := rpc.NewServer(log, nil)
	if err := svc.Mount(srv); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := rpc.NewHTTPServer(srv.Handler(), log)
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { _ = hs.Close() })
	tr := rpc.NewH2CTransport()
	t.Cleanup(tr.CloseIdleConnections)
	return &harness{secret: secret, bus: bus, logs: logs, baseURL: "http://" + ln.Addr().String(), http: &http.Client{Transport: tr}}
}

func (h *harness) client(opts []connect.ClientOption) authv1connect.AuthServiceClient {
	return authv1connect.NewAuthServiceClient(h.http, h.baseURL, opts...)
}

func wantCode(t *testing.T, err error, want connect.Code) *connect.Error {
	t.Helper()
	var ce *connect.Error
	if !errors.As(err, &ce) {
		t.Fatalf("got error %v, want code %v", err, want)
	}
	if ce.Code() != want {
		t.Fatalf("got code %v (%v), want %v", ce.Code(), err, want)
	}
	return ce
}

func TestAccountFlow(t *testing.T) {
	h := newHarness(t)
	sub, err := h.bus.Conn().SubscribeSync("reelway.events.user.registered")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.bus.Conn().Flush(); err != nil {
		t.Fatal(err)
	}

	var secrets []string // passwords and tokens that must never reach the logs
	for _, p := range protocols() {
		t.Run(p.name, func(t *testing.T) {
			ctx := t.Context()
			c := h.client(p.opts)
			email := "Alice." + p.name + "@Example.com"
			password := "correct horse battery staple"
			secrets = append(secrets, password)

			up, err := c.SignUp(ctx, &authv1.SignUpRequest{Email: email, Password: password, DisplayName: "Alice"})
			if err != nil {
				t.Fatal(err)
			}
			u := up.GetUser()
			if u.GetId() == "" || u.GetEmail() != email || u.GetDisplayName() != "Alice" || u.GetCreateTime() == nil {
				t.Fatalf("user: %v", u)
			}
			secrets = append(secrets, up.GetToken())
			if d := time.Until(up.GetExpireTime().AsTime()); d < 23*time.Hour || d > 24*time.Hour {
				t.Fatalf("token lifetime %v, want 24h", d)
			}
			msg, err := sub.NextMsg(5 * time.Second)
			if err != nil {
				t.Fatalf("no user.registered event: %v", err)
			}
			ev, err := events.Decode(msg.Data)
			if err != nil {
				t.Fatal(err)
			}
			if ev.GetUserRegistered().GetUserId() != u.GetId() || ev.GetSource() != "auth" {
				t.Fatalf("user.registered event: %v", ev)
			}

			ver, err := c.VerifyToken(ctx, &authv1.VerifyTokenRequest{Token: up.GetToken()})
			if err != nil {
				t.Fatal(err)
			}
			if ver.GetUserId() != u.GetId() || ver.GetEmail() != email || !ver.GetExpireTime().AsTime().Equal(up.GetExpireTime().AsTime()) {
				t.Fatalf("verify: %v", ver)
			}

			// Emails compare case-insensitively, at log-in and at sign-up.
			in, err := c.LogIn(ctx, &authv1.LogInRequest{Email: strings.ToLower(email), Password: password})
			if err != nil {
				t.Fatal(err)
			}
			secrets = append(secrets, in.GetToken())
			if in.GetUser().GetId() != u.GetId() {
				t.Fatalf("log-in user %v, want %v", in.GetUser(), u)
			}
			if ver, err := c.VerifyToken(ctx, &authv1.VerifyTokenRequest{Token: in.GetToken()}); err != nil || ver.GetUserId() != u.GetId() {
				t.Fatalf("verify log-in token: %v %v", ver, err)
			}
			_, err = c.SignUp(ctx, &authv1.SignUpRequest{Email: strings.ToUpper(email), Password: "another password"})
			wantCode(t, err, connect.CodeAlreadyExists)

			// A wrong password and an unknown email are indistinguishable.
			_, err = c.LogIn(ctx, &authv1.LogInRequest{Email: email, Password: "wrong password"})
			wrongPw := wantCode(t, err, connect.CodeUnauthenticated)
			_, err = c.LogIn(ctx, &authv1.LogInRequest{Email: "nobody." + p.name + "@example.com", Password: password})
			noUser := wantCode(t, err, connect.CodeUnauthenticated)
			if wrongPw.Message() != noUser.Message() {
				t.Fatalf("log-in errors differ: %q vs %q", wrongPw.Message(), noUser.Message())
			}
		})
	}
	for _, s := range secrets {
		if strings.Contains(h.logs.String(), s) {
			t.Fatalf("logs contain a password or token %q:\n%s", s, h.logs.String())
		}
	}
}

func TestLongPassword(t *testing.T) {
	h := newHarness(t)
	c := h.client(nil)
	// 128 characters of 3 bytes each: far beyond bcrypt's 72-byte input.
	long := strings.Repeat("€", 128)
	if _, err := c.SignUp(t.Context(), &authv1.SignUpRequest{Email: "long@example.com", Password: long}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.LogIn(t.Context(), &authv1.LogInRequest{Email: "long@example.com", Password: long}); err != nil {
		t.Fatal(err)
	}
	// Same first 72 bytes, different tail: must not log in.
	_, err := c.LogIn(t.Context(), &authv1.LogInRequest{Email: "long@example.com", Password: strings.Repeat("€", 127) + "x"})
	wantCode(t, err, connect.CodeUnauthenticated)
}

func TestBadInput(t *testing.T) {
	h := newHarness(t)
	ctx := t.Context()
	now := time.Now()
	expired, err := auth.SignToken(h.secret, auth.Claims{Subject: "usr_1", Email: "a@example.com", IssuedAt: now.Add(-25 * time.Hour).Unix(), ExpiresAt: now.Add(-time.Hour).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	forged, err := auth.SignToken([]byte("guessed-secret-guessed-secret-gu"), auth.Claims{Subject: "usr_admin", ExpiresAt: now.Add(time.Hour).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	genuine, err := auth.SignToken(h.secret, auth.Claims{Subject: "usr_1", ExpiresAt: now.Add(time.Hour).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	// The forged token's claims under the genuine token's signature.
	forgedPayload, _, _ := strings.Cut(forged, ".")
	_, sig, _ := strings.Cut(genuine, ".")
	tampered := forgedPayload + "." + sig

	tests := []struct {
		name string
		call func(authv1connect.AuthServiceClient) error
		want connect.Code
	}{
		{"sign up invalid email", func(c authv1connect.AuthServiceClient) error {
			_, err := c.SignUp(ctx, &authv1.SignUpRequest{Email: "not-an-email", Password: "long enough"})
			return err
		}, connect.CodeInvalidArgument},
		{"sign up short password", func(c authv1connect.AuthServiceClient) error {
			_, err := c.SignUp(ctx, &authv1.SignUpRequest{Email: "a@example.com", Password: "short"})
			return err
		}, connect.CodeInvalidArgument},
		{"log in invalid email", func(c authv1connect.AuthServiceClient) error {
			_, err := c.LogIn(ctx, &authv1.LogInRequest{Email: "nope", Password: "whatever"})
			return err
		}, connect.CodeInvalidArgument},
		{"log in empty password", func(c authv1connect.AuthServiceClient) error {
			_, err := c.LogIn(ctx, &authv1.LogInRequest{Email: "a@example.com"})
			return err
		}, connect.CodeInvalidArgument},
		{"verify empty token", func(c authv1connect.AuthServiceClient) error {
			_, err := c.VerifyToken(ctx, &authv1.VerifyTokenRequest{})
			return err
		}, connect.CodeInvalidArgument},
		{"verify garbage", func(c authv1connect.AuthServiceClient) error {
			_, err := c.VerifyToken(ctx, &authv1.VerifyTokenRequest{Token: "garbage"})
			return err
		}, connect.CodeUnauthenticated},
		{"verify expired", func(c authv1connect.AuthServiceClient) error {
			_, err := c.VerifyToken(ctx, &authv1.VerifyTokenRequest{Token: expired})
			return err
		}, connect.CodeUnauthenticated},
		{"verify forged", func(c authv1connect.AuthServiceClient) error {
			_, err := c.VerifyToken(ctx, &authv1.VerifyTokenRequest{Token: forged})
			return err
		}, connect.CodeUnauthenticated},
		{"verify tampered payload", func(c authv1connect.AuthServiceClient) error {
			_, err := c.VerifyToken(ctx, &authv1.VerifyTokenRequest{Token: tampered})
			return err
		}, connect.CodeUnauthenticated},
	}
	for _, p := range protocols() {
		c := h.client(p.opts)
		for _, tt := range tests {
			t.Run(p.name+"/"+tt.name, func(t *testing.T) {
				wantCode(t, tt.call(c), tt.want)
			})
		}
	}
	if _, err := h.client(nil).VerifyToken(ctx, &authv1.VerifyTokenRequest{Token: genuine}); err != nil {
		t.Fatalf("genuine token rejected: %v", err)
	}
}

func TestGeneratedSecretSurvivesRestart(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	log := slog.New(slog.DiscardHandler)

	svc, err := auth.Open(ctx, dir, nil, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	up, err := svc.SignUp(ctx, &authv1.SignUpRequest{Email: "bob@example.com", Password: "password123"})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Close(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, "auth.secret"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("auth.secret mode %v, want 0600", fi.Mode().Perm())
	}

	svc, err = auth.Open(ctx, dir, nil, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	ver, err := svc.VerifyToken(ctx, &authv1.VerifyTokenRequest{Token: up.GetToken()})
	if err != nil {
		t.Fatalf("token from before the restart: %v", err)
	}
	if ver.GetUserId() != up.GetUser().GetId() {
		t.Fatalf("verify after restart: %v", ver)
	}
	if _, err := svc.LogIn(ctx, &authv1.LogInRequest{Email: "BOB@example.com", Password: "password123"}); err != nil {
		t.Fatalf("log in after restart: %v", err)
	}
	if err := svc.Close(); err != nil {
		t.Fatal(err)
	}

	// An explicit secret replaces the generated one: old tokens no longer verify.
	svc, err = auth.Open(ctx, dir, []byte("explicit-secret-explicit-secret!"), log, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	_, err = svc.VerifyToken(ctx, &authv1.VerifyTokenRequest{Token: up.GetToken()})
	wantCode(t, err, connect.CodeUnauthenticated)
}
