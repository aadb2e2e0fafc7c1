package upload

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"connectrpc.com/connect"
	authv1 "github.com/reelway/reelway/gen/reelway/auth/v1"
	"github.com/reelway/reelway/gen/reelway/auth/v1/authv1connect"
	metadatav1 "github.com/reelway/reelway/gen/reelway/metadata/v1"
)

// Users verifies the auth tokens uploads carry, so a video is owned by whoever signed in.
type Users interface {
	VerifyToken(ctx context.Context, req *authv1.VerifyTokenRequest) (*authv1.VerifyTokenResponse, error)
}

var _ Users = authv1connect.AuthServiceClient(nil)

const (
	// maxTokenLen is the auth schema's limit on a token; a longer one cannot verify.
	maxTokenLen = 4096
	// verifyTimeout bounds the call to the auth service, which runs before the caller's
	// bytes are taken: an auth outage must not hold uploads open.
	verifyTimeout = 10 * time.Second
)

// owner returns the user id of the caller whose auth token h carries ("" without an
// Authorization header: an anonymous upload), and refuses a private video that nobody
// would own. A token that does not verify is ErrUnauthenticated, never anonymous; an auth
// service out of reach is ErrUnavailable. The token itself never reaches a log or an error.
func (s *Service) owner(ctx context.Context, h http.Header, vis metadatav1.Visibility) (string, error) {
	owner, err := s.verify(ctx, h)
	if err != nil {
		return "", err
	}
	if err := needsOwner(vis, owner); err != nil {
		return "", err
	}
	return owner, nil
}

// needsOwner refuses a private video without an owner: nobody could ever play it.
func needsOwner(vis metadatav1.Visibility, owner string) error {
	if vis == metadatav1.Visibility_VISIBILITY_PRIVATE && owner == "" {
		return fmt.Errorf("%w: a private video needs an owner: send Authorization: Bearer <token>", ErrInvalid)
	}
	return nil
}

// verify checks the bearer token of h with the auth service.
func (s *Service) verify(ctx context.Context, h http.Header) (string, error) {
	values := h.Values("Authorization")
	if len(values) == 0 {
		return "", nil
	}
	if len(values) > 1 {
		return "", fmt.Errorf("%w: more than one Authorization header", ErrUnauthenticated)
	}
	scheme, token, _ := strings.Cut(strings.TrimSpace(values[0]), " ")
	token = strings.TrimSpace(token)
	switch {
	case !strings.EqualFold(scheme, "Bearer"):
		return "", fmt.Errorf("%w: Authorization must be \"Bearer <auth token>\"", ErrUnauthenticated)
	case token == "":
		return "", fmt.Errorf("%w: the bearer token is empty", ErrUnauthenticated)
	case len(token) > maxTokenLen:
		return "", fmt.Errorf("%w: the bearer token is longer than %d bytes", ErrUnauthenticated, maxTokenLen)
	case s.users == nil:
		return "", fmt.Errorf("%w: this upload service cannot verify auth tokens", ErrUnavailable)
	}
	vctx, cancel := context.WithTimeout(ctx, verifyTimeout)
	defer cancel()
	res, err := s.users.VerifyToken(vctx, &authv1.VerifyTokenRequest{Token: token})
	switch code := connect.CodeOf(err); {
	case err == nil && res.GetUserId() != "":
		return res.GetUserId(), nil
	case err == nil:
		return "", fmt.Errorf("%w: auth: the token names no user", ErrUnauthenticated)
	case code == connect.CodeUnauthenticated || code == connect.CodeInvalidArgument || code == connect.CodePermissionDenied:
		// Auth's reason (expired, invalid) helps the caller and never repeats the token.
		var ce *connect.Error
		reason := "the token does not verify"
		if errors.As(err, &ce) && ce.Message() != "" {
			reason = ce.Message()
		}
		return "", fmt.Errorf("%w: %s", ErrUnauthenticated, reason)
	case ctx.Err() != nil:
		// The caller went away; not auth's fault.
		return "", ctx.Err()
	default:
		s.log.WarnContext(ctx, "upload.auth_unavailable", "err", err)
		return "", fmt.Errorf("%w: verify auth token: %w", ErrUnavailable, err)
	}
}

// parseVisibility reads a visibility from a query parameter or tus metadata: public,
// unlisted or private in any case; "" leaves it unspecified (public).
func parseVisibility(v string) (metadatav1.Visibility, error) {
	switch {
	case v == "":
		return metadatav1.Visibility_VISIBILITY_UNSPECIFIED, nil
	case strings.EqualFold(v, "public"):
		return metadatav1.Visibility_VISIBILITY_PUBLIC, nil
	case strings.EqualFold(v, "unlisted"):
		return metadatav1.Visibility_VISIBILITY_UNLISTED, nil
	case strings.EqualFold(v, "private"):
		return metadatav1.Visibility_VISIBILITY_PRIVATE, nil
	}
	return 0, fmt.Errorf("%w: visibility %q: want public, unlisted or private", ErrInvalid, truncate(v, 40))
}

// visibilityName is the word parseVisibility reads back; "" for unspecified.
func visibilityName(v metadatav1.Visibility) string {
	switch v {
	case metadatav1.Visibility_VISIBILITY_PUBLIC:
		return "public"
	case metadatav1.Visibility_VISIBILITY_UNLISTED:
		return "unlisted"
	case metadatav1.Visibility_VISIBILITY_PRIVATE:
		return "private"
	}
	return ""
}

// recordedVisibility is the visibility a new video is recorded with: public unless chosen
// otherwise.
func recordedVisibility(v metadatav1.Visibility) metadatav1.Visibility {
	if v == metadatav1.Visibility_VISIBILITY_UNSPECIFIED {
		return metadatav1.Visibility_VISIBILITY_PUBLIC
	}
	return v
}
