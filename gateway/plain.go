package gateway

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/reelway/reelway/svc/rpc"
)

// plainPath is what the gateway knows of a plain route.
type plainPath struct {
	// service is the registered service behind the route.
	service string
	// route is the label the route's requests are counted under.
	route string
	// allow lists the methods the route serves, for the Allow header of the gateway's
	// 405 answers; "" leaves methods to the backend (tus answers 405 itself).
	allow string
	// forward lists the methods of allow the backend answers; the gateway answers the
	// others (OPTIONS without a backend route).
	forward string
}

// plainRoute maps the gateway's plain HTTP prefixes to what it knows of them.
func plainRoute(path string) (plainPath, bool) {
	switch {
	case path == "/v1/uploads":
		// POST takes a file; OPTIONS is the gateway's (preflights by its CORS policy,
		// others with Allow).
		return plainPath{service: "upload", route: "/v1/uploads", allow: "OPTIONS, POST", forward: "POST"}, true
	case strings.HasPrefix(path, "/v1/uploads/"):
		return plainPath{service: "upload", route: "/v1/uploads"}, true
	case strings.HasPrefix(path, "/v1/hls/"):
		// Streaming serves files (HEAD included) and answers preflights for players.
		return plainPath{service: "streaming", route: "/v1/hls", allow: "GET, HEAD, OPTIONS", forward: "GET, HEAD, OPTIONS"}, true
	}
	return plainPath{}, false
}

// forwards says whether the backend is the one to answer method on this route.
func (p *plainPath) forwards(method string) bool {
	return p.allow == "" || listed(p.forward, method)
}

// listed says whether method is one of the comma-separated methods in allow.
func listed(allow, method string) bool {
	for allow != "" {
		var m string
		m, allow, _ = strings.Cut(allow, ",")
		if strings.TrimSpace(m) == method {
			return true
		}
	}
	return false
}

// refuseMethod answers a method the route's backend does not serve: 405 with Allow, or,
// for an OPTIONS request (not a CORS preflight: the CORS policy answers those), 204 with
// Allow. The backends would answer 404 from their catch-all, which tells a client nothing.
func (g *Gateway) refuseMethod(w http.ResponseWriter, r *http.Request, p *plainPath) {
	w.Header().Set("Allow", p.allow)
	if listed(p.allow, r.Method) {
		g.metrics.failed(p.route, rpc.WireHTTP, http.StatusNoContent, 0)
		w.WriteHeader(http.StatusNoContent)
		return
	}
	g.metrics.failed(p.route, rpc.WireHTTP, http.StatusMethodNotAllowed, 0)
	writePlainError(w, http.StatusMethodNotAllowed, "unimplemented",
		fmt.Sprintf("%v: %s %s (allowed: %s)", ErrMethodNotAllowed, r.Method, p.route, p.allow))
}

// refuseUncleanPaths is put in front of the gateway's mux. A path with an empty segment
// ("//"), a "." or ".." segment, raw or percent-encoded, or with an encoded slash, gets
// 400 in the gateway's JSON error format. The mux would answer a raw one with a 307
// redirect to the cleaned path and an HTML body (which an RPC client or an uploader
// cannot use, and which a POST body would not survive), and pass an encoded one through
// to a backend, which decodes it into a traversal.
//
// 400 rather than 404 or a redirect: clients remove dot segments before sending (RFC 3986
// §5.2.4), and no resource of the platform is named with an empty segment, a dot segment
// or a slash inside a segment, so such a request is malformed (or probing), and a proxy
// must not guess which path was meant.
func (g *Gateway) refuseUncleanPaths(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !uncleanPath(r.URL) {
			next.ServeHTTP(w, r)
			return
		}
		route := "unknown"
		if p, ok := plainRoute(r.URL.Path); ok {
			route = p.route
		}
		g.log.DebugContext(r.Context(), "path.refused", "method", r.Method, "path", r.URL.EscapedPath())
		g.metrics.failed(route, rpc.WireHTTP, http.StatusBadRequest, 0)
		writePlainError(w, http.StatusBadRequest, "invalid_argument", ErrBadPath.Error())
	})
}

// uncleanPath says whether u's path has an empty segment, a dot segment (after
// percent-decoding) or an encoded slash. The common case, a path without "//" or "/.",
// costs two substring searches. A trailing slash is not an empty segment: it names a
// collection (the tus creation endpoint is /v1/uploads/tus/).
func uncleanPath(u *url.URL) bool {
	p := u.Path
	if strings.Contains(p, "//") {
		return true
	}
	for {
		i := strings.Index(p, "/.")
		if i < 0 {
			break
		}
		p = p[i+2:]
		if p == "" || p[0] == '/' || (p[0] == '.' && (len(p) == 1 || p[1] == '/')) {
			return true
		}
	}
	// RawPath is set only when the path was escaped unlike the default, as "%2F" is.
	return u.RawPath != "" && (strings.Contains(u.RawPath, "%2F") || strings.Contains(u.RawPath, "%2f"))
}

// errAnswered is what the transport reads from a request body the gateway stopped
// forwarding because the backend had already answered.
var errAnswered = errors.New("gateway: the backend answered before the request body was through")

// plainBody is a plain route's request body as the transport reads it for the backend.
// It counts what went through, so the forwarder can tell an answer the backend sent
// before it had the whole body (an upload refused from its headers), and it can be
// stopped.
type plainBody struct {
	rc      io.ReadCloser
	length  int64 // declared length; -1 when unknown (chunked)
	read    atomic.Int64
	ended   atomic.Bool
	stopped atomic.Bool
}

func newPlainBody(r *http.Request) *plainBody {
	return &plainBody{rc: r.Body, length: r.ContentLength}
}

func (b *plainBody) Read(p []byte) (int, error) {
	if b.stopped.Load() {
		return 0, errAnswered
	}
	n, err := b.rc.Read(p)
	b.read.Add(int64(n))
	if err != nil {
		b.ended.Store(true)
	}
	return n, err
}

func (b *plainBody) Close() error { return b.rc.Close() }

// unfinished says whether the backend cannot have had the whole body yet. The transport
// counts a byte as read before it sends it, so an answer after the last byte of a
// declared length is never taken for an early one; a chunked body's end reaches the
// backend only after the transport read its EOF.
func (b *plainBody) unfinished() bool {
	return !b.ended.Load() && (b.length < 0 || b.read.Load() < b.length)
}

// relayEarly relays an answer the backend sent before the request body was through, such
// as the upload service's 413 for a declared length over its limit, the way net/http
// answers such a request itself: at once, over HTTP/1 with Connection: close, and without
// reading (or forwarding) the rest of the body.
func (g *Gateway) relayEarly(w http.ResponseWriter, r *http.Request, resp *http.Response, pb *plainBody) {
	rc := http.NewResponseController(w)
	// The transport is still reading the caller's body for the backend, in another
	// goroutine. Before sending the answer's headers an HTTP/1 server decides whether to
	// drain the rest of the body, which takes the body's lock, held by that read: it would
	// wait for the caller's next bytes. In full duplex it leaves the body alone.
	_ = rc.EnableFullDuplex()
	dst := w.Header()
	for k, v := range resp.Header {
		dst[k] = v
	}
	if r.ProtoMajor == 1 {
		dst["Connection"] = []string{"close"}
	}
	w.WriteHeader(resp.StatusCode)
	// Stop the body: the transport's read, blocked on the caller, ends at the deadline
	// (an HTTP/1 body cannot be closed while a read holds it), and the transport then
	// drops the backend connection, so the backend's read of the body ends too.
	stop := func() {
		pb.stopped.Store(true)
		_ = rc.SetReadDeadline(time.Now())
	}
	bp := g.transfers.Get().(*[]byte)
	defer g.transfers.Put(bp)
	buf := *bp
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				stop()
				return
			}
			if ferr := rc.Flush(); ferr != nil && !errors.Is(ferr, http.ErrNotSupported) {
				stop()
				return
			}
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			stop()
			panic(http.ErrAbortHandler)
		}
	}
	_ = rc.Flush() // headers of an answer without a body
	stop()
}
