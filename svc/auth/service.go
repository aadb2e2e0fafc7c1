// Package auth is the AuthService: accounts with bcrypt-hashed passwords in SQLite, and
// stateless HMAC-signed tokens that any holder of the secret can verify.
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"connectrpc.com/connect"
	authv1 "github.com/reelway/reelway/gen/reelway/auth/v1"
	"github.com/reelway/reelway/gen/reelway/auth/v1/authv1connect"
	eventsv1 "github.com/reelway/reelway/gen/reelway/events/v1"
	"github.com/reelway/reelway/svc/events"
	"github.com/reelway/reelway/svc/rpc"
	"golang.org/x/crypto/bcrypt"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Source is the source name on the events this service publishes.
const Source = "auth"

// TokenLifetime is how long an issued token is valid.
const TokenLifetime = 24 * time.Hour

// publishTimeout bounds the wait for JetStream's ack so a bus outage cannot hang sign-ups.
const publishTimeout = 3 * time.Second

// Errors of the auth service.
var (
	// ErrEmailTaken means an account with that email (compared case-insensitively) exists.
	ErrEmailTaken = errors.New("auth: email already registered")
	// ErrCredentials means the email or password is wrong; which one is deliberately not
	// said, so the API cannot be used to probe for registered emails.
	ErrCredentials = errors.New("auth: invalid email or password")
	// ErrSecret means the signing secret could not be loaded or created.
	ErrSecret = errors.New("auth: signing secret")
	// ErrStore wraps failures of the user database.
	ErrStore = errors.New("auth: store")

	errNoUser = errors.New("auth: no such user")
)

// Publisher sends domain events; *events.Bus satisfies it.
type Publisher interface {
	Publish(ctx context.Context, ev *eventsv1.Event) error
}

var _ Publisher = (*events.Bus)(nil)

// Service implements AuthService.
type Service struct {
	store  *userStore
	secret []byte
	log    *slog.Logger
	pub    Publisher
	now    func() time.Time
	cost   int
	// dummyHash is compared against when an email is unknown, so a failed log-in costs the
	// same bcrypt work whether or not the account exists.
	dummyHash []byte
}

var _ authv1connect.AuthServiceHandler = (*Service)(nil)

// Option adjusts Open.
type Option func(*options)

type options struct {
	bcryptCost int
}

// WithBcryptCost sets the bcrypt work factor of new password hashes (default
// bcrypt.DefaultCost). Tests lower it to bcrypt.MinCost to stay fast; production should
// not. Existing hashes keep the cost they were made with.
func WithBcryptCost(cost int) Option {
	return func(o *options) { o.bcryptCost = min(max(cost, bcrypt.MinCost), bcrypt.MaxCost) }
}

// Open opens the user database in dataDir/auth.db. An empty secret means the one kept in
// dataDir/auth.secret, generated on first start. pub may be nil, in which case no events
// are published.
func Open(ctx context.Context, dataDir string, secret []byte, log *slog.Logger, pub Publisher, opts ...Option) (*Service, error) {
	o := options{bcryptCost: bcrypt.DefaultCost}
	for _, opt := range opts {
		opt(&o)
	}
	if err := os.MkdirAll(dataDir, 0o750); err != nil {
		return nil, fmt.Errorf("%w: create data dir: %w", ErrStore, err)
	}
	if len(secret) == 0 {
		var err error
		if secret, err = loadOrCreateSecret(filepath.Join(dataDir, "auth.secret"), log); err != nil {
			return nil, err
		}
	} else {
		secret = append([]byte(nil), secret...)
		if len(secret) < secretLen {
			log.Warn("auth.secret.short", "bytes", len(secret), "recommended", secretLen)
		}
	}
	dummy, err := bcrypt.GenerateFromPassword(prehash(rand.Text()), o.bcryptCost)
	if err != nil {
		return nil, fmt.Errorf("auth: prepare dummy hash: %w", err)
	}
	store, err := openStore(ctx, filepath.Join(dataDir, "auth.db"))
	if err != nil {
		return nil, err
	}
	return &Service{store: store, secret: secret, log: log, pub: pub, now: time.Now, cost: o.bcryptCost, dummyHash: dummy}, nil
}

// Mount registers the Connect handler.
func (s *Service) Mount(srv *rpc.Server) error {
	path, h := authv1connect.NewAuthServiceHandler(s, srv.HandlerOptions()...)
	srv.Mount(authv1connect.AuthServiceName, path, h)
	return nil
}

// Close closes the user database.
func (s *Service) Close() error { return s.store.close() }

// prehash turns any password into 44 bytes before bcrypt, which reads only 72 bytes and
// rejects longer input, while the API accepts 128 characters (up to 512 bytes).
func prehash(password string) []byte {
	sum := sha256.Sum256([]byte(password))
	return []byte(base64.StdEncoding.EncodeToString(sum[:]))
}

func emailKey(email string) string { return strings.ToLower(email) }

func newUserID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "usr_" + hex.EncodeToString(b[:])
}

// SignUp implements AuthServiceHandler.
func (s *Service) SignUp(ctx context.Context, req *authv1.SignUpRequest) (*authv1.SignUpResponse, error) {
	hash, err := bcrypt.GenerateFromPassword(prehash(req.GetPassword()), s.cost)
	if err != nil {
		return nil, s.toConnect(ctx, fmt.Errorf("auth: hash password: %w", err))
	}
	u := user{
		ID:           newUserID(),
		Email:        req.GetEmail(),
		DisplayName:  req.GetDisplayName(),
		PasswordHash: hash,
		CreateTime:   s.now().Truncate(time.Microsecond),
	}
	if err := s.store.create(ctx, u, emailKey(u.Email)); err != nil {
		return nil, s.toConnect(ctx, err)
	}
	token, exp, err := s.issue(u)
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	s.log.InfoContext(ctx, "user.registered", "user_id", u.ID)
	s.publish(ctx, events.UserRegistered(Source, u.ID))
	return &authv1.SignUpResponse{User: toProto(u), Token: token, ExpireTime: timestamppb.New(exp)}, nil
}

// LogIn implements AuthServiceHandler.
func (s *Service) LogIn(ctx context.Context, req *authv1.LogInRequest) (*authv1.LogInResponse, error) {
	u, err := s.store.byEmail(ctx, emailKey(req.GetEmail()))
	switch {
	case errors.Is(err, errNoUser):
		_ = bcrypt.CompareHashAndPassword(s.dummyHash, prehash(req.GetPassword()))
		return nil, s.toConnect(ctx, ErrCredentials)
	case err != nil:
		return nil, s.toConnect(ctx, err)
	}
	if err := bcrypt.CompareHashAndPassword(u.PasswordHash, prehash(req.GetPassword())); err != nil {
		s.log.InfoContext(ctx, "login.failed", "user_id", u.ID)
		return nil, s.toConnect(ctx, ErrCredentials)
	}
	token, exp, err := s.issue(u)
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	s.log.InfoContext(ctx, "login", "user_id", u.ID)
	return &authv1.LogInResponse{User: toProto(u), Token: token, ExpireTime: timestamppb.New(exp)}, nil
}

// VerifyToken implements AuthServiceHandler. Tokens are stateless: a valid signature and
// expiry are enough, no database read is needed.
func (s *Service) VerifyToken(ctx context.Context, req *authv1.VerifyTokenRequest) (*authv1.VerifyTokenResponse, error) {
	c, err := ParseToken(s.secret, req.GetToken(), s.now())
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	return &authv1.VerifyTokenResponse{
		UserId:     c.Subject,
		Email:      c.Email,
		ExpireTime: timestamppb.New(time.Unix(c.ExpiresAt, 0)),
	}, nil
}

func (s *Service) issue(u user) (string, time.Time, error) {
	now := s.now()
	exp := now.Add(TokenLifetime).Truncate(time.Second)
	token, err := SignToken(s.secret, Claims{Subject: u.ID, Email: u.Email, IssuedAt: now.Unix(), ExpiresAt: exp.Unix()})
	if err != nil {
		return "", time.Time{}, err
	}
	return token, exp, nil
}

func toProto(u user) *authv1.User {
	return &authv1.User{Id: u.ID, Email: u.Email, DisplayName: u.DisplayName, CreateTime: timestamppb.New(u.CreateTime)}
}

// publish announces a committed change; a failure is logged, not returned, because the
// account exists and failing the RPC would make the caller retry a sign-up that worked.
func (s *Service) publish(ctx context.Context, ev *eventsv1.Event) {
	if s.pub == nil {
		return
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), publishTimeout)
	defer cancel()
	if err := s.pub.Publish(pctx, ev); err != nil {
		s.log.WarnContext(ctx, "event.publish", "type", events.Name(ev.GetType()), "subject_id", ev.GetSubjectId(), "err", err)
	}
}

// toConnect maps domain errors to Connect codes. Anything unexpected is logged here and
// reaches the caller as a bare internal error.
func (s *Service) toConnect(ctx context.Context, err error) error {
	switch {
	case errors.Is(err, ErrEmailTaken):
		return connect.NewError(connect.CodeAlreadyExists, ErrEmailTaken)
	case errors.Is(err, ErrCredentials):
		return connect.NewError(connect.CodeUnauthenticated, ErrCredentials)
	case errors.Is(err, ErrTokenExpired):
		return connect.NewError(connect.CodeUnauthenticated, ErrTokenExpired)
	case errors.Is(err, ErrTokenInvalid):
		return connect.NewError(connect.CodeUnauthenticated, ErrTokenInvalid)
	case errors.Is(err, context.Canceled):
		return connect.NewError(connect.CodeCanceled, err)
	case errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeDeadlineExceeded, err)
	}
	s.log.ErrorContext(ctx, "auth.internal", "err", err)
	return connect.NewError(connect.CodeInternal, errors.New("auth: internal error"))
}
