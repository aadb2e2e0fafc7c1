package rpc

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/reelway/reelway/svc/registry"
	"golang.org/x/net/http2"
)

// Resolver finds the passing instances of a registered service.
type Resolver interface {
	Resolve(ctx context.Context, name string) ([]registry.Instance, error)
}

var _ Resolver = (*registry.Catalog)(nil)

// NewH2CTransport returns an HTTP/2 transport that speaks cleartext HTTP/2 (h2c) to
// backends, as every Reelway service listens.
func NewH2CTransport() *http2.Transport {
	return &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
		ReadIdleTimeout: 30 * time.Second,
		PingTimeout:     10 * time.Second,
	}
}

// Pool hands out Connect clients for registered services. Every call resolves a passing
// instance through the registry, balances round robin, and goes through that instance's
// circuit breaker over one shared HTTP/2 transport.
type Pool struct {
	res       Resolver
	transport *http2.Transport
	breakers  *Breakers
	log       *slog.Logger

	mu   sync.Mutex
	next map[string]*atomic.Uint64
}

// NewPool returns a pool resolving through res.
func NewPool(res Resolver, log *slog.Logger) *Pool {
	return &Pool{
		res:       res,
		transport: NewH2CTransport(),
		breakers:  NewBreakers(log),
		log:       log,
		next:      make(map[string]*atomic.Uint64),
	}
}

// HTTPClient returns a connect.HTTPClient that sends to an instance of service. Use it
// with the base URL "http://<service>".
func (p *Pool) HTTPClient(service string) connect.HTTPClient {
	return &poolClient{pool: p, service: service}
}

// ClientOptions are the options every pool client should be built with.
func (p *Pool) ClientOptions() []connect.ClientOption {
	return []connect.ClientOption{connect.WithInterceptors(requestIDPropagator{})}
}

// BaseURL is the base URL to give a Connect client built on HTTPClient(service).
func BaseURL(service string) string { return "http://" + service }

// Close releases idle connections.
func (p *Pool) Close() { p.transport.CloseIdleConnections() }

func (p *Pool) counter(service string) *atomic.Uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	c, ok := p.next[service]
	if !ok {
		c = new(atomic.Uint64)
		p.next[service] = c
	}
	return c
}

type poolClient struct {
	pool    *Pool
	service string
}

func (c *poolClient) Do(req *http.Request) (*http.Response, error) {
	instances, err := c.pool.res.Resolve(req.Context(), c.service)
	if err != nil {
		return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("resolve %s: %w", c.service, err))
	}
	start := c.pool.counter(c.service).Add(1)
	var lastErr error
	for i := range instances {
		in := instances[(int(start)+i)%len(instances)]
		out := req.Clone(req.Context())
		out.URL.Scheme = "http"
		out.URL.Host = in.HostPort()
		out.Host = in.HostPort()
		if i > 0 && req.GetBody != nil {
			body, err := req.GetBody()
			if err != nil {
				return nil, err
			}
			out.Body = body
		}
		resp, err := c.pool.breakers.RoundTrip(c.pool.transport, in.ID, out)
		if err == nil {
			return resp, nil
		}
		lastErr = err
		// Another instance may only be tried when this one provably never saw the request
		// and the body can be sent again.
		if !neverSent(err) || (req.Body != nil && req.Body != http.NoBody && req.GetBody == nil) {
			break
		}
	}
	return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("call %s: %w", c.service, lastErr))
}

func neverSent(err error) bool {
	if errors.Is(err, ErrBreakerOpen) {
		return true
	}
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// requestIDPropagator copies the request id from ctx onto outgoing calls.
type requestIDPropagator struct{}

func (requestIDPropagator) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if id := RequestID(ctx); id != "" && req.Spec().IsClient {
			req.Header().Set(HeaderRequestID, id)
		}
		return next(ctx, req)
	}
}

func (requestIDPropagator) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		if id := RequestID(ctx); id != "" {
			conn.RequestHeader().Set(HeaderRequestID, id)
		}
		return conn
	}
}

func (requestIDPropagator) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}
