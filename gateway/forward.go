package gateway

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"

	"github.com/reelway/reelway/svc/rpc"
)

// hopHeaders are the hop-by-hop headers a proxy must not forward (RFC 9110 §7.6.1).
// "Te" is handled apart: gRPC needs "Te: trailers" to reach the backend.
var hopHeaders = [...]string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Trailer", "Transfer-Encoding", "Upgrade",
}

func removeHopByHop(h http.Header) {
	for _, v := range h["Connection"] {
		for _, f := range strings.Split(v, ",") {
			if f = strings.TrimSpace(f); f != "" {
				h.Del(f)
			}
		}
	}
	for _, k := range hopHeaders {
		delete(h, k)
	}
}

// forward proxies one request through the transport and streams the answer back. It is
// httputil.ReverseProxy cut to what the gateway needs, after profiling showed the
// reverse proxy's per-request cost (a deep clone of the request and its headers, a
// per-request latency writer, header copies) as the largest share of the gateway's own
// work: the inbound request is reused (its headers are edited in place, the handler owns
// them now), response headers move over without copying their values, and a unary
// response is written without intermediate flushes. Streaming responses are flushed after
// every read, so each message leaves as soon as it arrives. pb is a plain route's request
// body (nil for RPCs and bodiless requests): an answer that comes before all of it went
// through is relayed by relayEarly.
func (g *Gateway) forward(ctx context.Context, w http.ResponseWriter, r *http.Request, c *call, pb *plainBody) {
	out := r.WithContext(context.WithValue(ctx, callKey{}, c))
	u := *r.URL
	u.Scheme, u.Host = "http", "backend.invalid" // the transport picks the instance per attempt
	out.URL = &u
	out.RequestURI = ""
	out.Host = ""
	out.Close = false
	h := out.Header
	te := h["Te"]
	removeHopByHop(h)
	delete(h, "Te")
	for _, v := range te {
		if strings.Contains(strings.ToLower(v), "trailers") {
			h["Te"] = []string{"trailers"}
			break
		}
	}
	h.Set(rpc.HeaderRequestID, rpc.RequestID(r.Context()))
	if ip, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		if prior := h["X-Forwarded-For"]; len(prior) > 0 {
			ip = strings.Join(prior, ", ") + ", " + ip
		}
		h["X-Forwarded-For"] = []string{ip}
	}
	// The gateway is the edge: the host and scheme it saw are the ones backends build
	// URLs from (tus Locations), never what a caller claims. A caller's Forwarded header
	// would override them in the backends that read it (tusd does), so it goes.
	delete(h, "Forwarded")
	h["X-Forwarded-Host"] = []string{r.Host} // never empty: rpc's server fills in a missing Host
	h["X-Forwarded-Proto"] = []string{"http"}
	if _, ok := h["User-Agent"]; !ok {
		h["User-Agent"] = []string{""} // no Go default User-Agent on the caller's behalf
	}
	if r.ContentLength == 0 {
		out.Body = nil
	}

	resp, err := g.transport.RoundTrip(out)
	if err != nil {
		g.proxyError(w, out, err)
		return
	}
	defer resp.Body.Close()
	removeHopByHop(resp.Header)
	delete(resp.Header, rpc.HeaderRequestID) // the gateway already answers with the id it forwarded
	if pb != nil && pb.unfinished() {
		g.relayEarly(w, r, resp, pb)
		return
	}
	dst := w.Header()
	for k, v := range resp.Header {
		dst[k] = v
	}
	text := false
	if c.text {
		if ct, ok := textWebType(resp.Header.Get("Content-Type")); ok {
			dst["Content-Type"] = []string{ct}
			delete(dst, "Content-Length")
			text = true
		}
	}
	announced := len(resp.Trailer)
	if announced > 0 {
		keys := make([]string, 0, announced)
		for k := range resp.Trailer {
			keys = append(keys, k)
		}
		dst["Trailer"] = []string{strings.Join(keys, ", ")}
	}
	w.WriteHeader(resp.StatusCode)

	flush := !c.unary && (c.wire != rpc.WireHTTP || resp.ContentLength < 0)
	rc := http.NewResponseController(w)
	pool := g.buffers
	if c.wire == rpc.WireHTTP {
		pool = g.transfers
	}
	bp := pool.Get().(*[]byte)
	defer pool.Put(bp)
	buf := *bp
	var enc []byte // base64 of one read, for gRPC-Web text callers
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			out := buf[:n]
			if text {
				enc = base64.StdEncoding.AppendEncode(enc[:0], out)
				out = enc
			}
			if _, werr := w.Write(out); werr != nil {
				return // the caller went away: the watched body records it as ignored
			}
			if flush {
				if ferr := rc.Flush(); ferr != nil && !errors.Is(ferr, http.ErrNotSupported) {
					return
				}
			}
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			// Cut mid-body where no protocol-level ending was possible: abort the stream
			// so the caller sees a reset, not a short but well-formed answer.
			panic(http.ErrAbortHandler)
		}
	}
	resp.Body.Close() // populates the trailers of HTTP/1 responses
	if len(resp.Trailer) == announced {
		for k, v := range resp.Trailer {
			dst[k] = v
		}
		return
	}
	for k, v := range resp.Trailer {
		dst[http.TrailerPrefix+k] = v
	}
}

// transferBufferSize is the copy buffer of plain-route bodies. It is larger than the
// backend connection's read buffer (64 KiB), so reads bypass it and land here directly,
// and a segment moves in a few large reads and writes instead of one pair per 32 KiB.
const transferBufferSize = 256 << 10

// newBuffers returns a pool of copy buffers of the given size.
func newBuffers(size int) *sync.Pool {
	return &sync.Pool{New: func() any { b := make([]byte, size); return &b }}
}
