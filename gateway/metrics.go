package gateway

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
	"strings"

	"connectrpc.com/connect"
	"github.com/failsafe-go/failsafe-go/circuitbreaker"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/reelway/reelway/svc/rpc"
)

// metrics are the gateway's Prometheus series. They live in a registry handed in by the
// caller (never the global default one), served at GET /metrics.
type metrics struct {
	reg         *prometheus.Registry
	requests    *prometheus.CounterVec
	retries     *prometheus.CounterVec
	exhausted   prometheus.Counter
	transitions *prometheus.CounterVec
}

func newMetrics(reg *prometheus.Registry, g *Gateway) *metrics {
	m := &metrics{
		reg: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "reelway_gateway_requests_total",
			Help: "Requests by route (procedure or plain prefix) and final code (RPC code name, or HTTP status on plain routes and for RPC answers without a code).",
		}, []string{"route", "code"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "reelway_gateway_retries_total",
			Help: "Attempts sent to another instance, by route and reason (not_sent: the first never reached a backend; backend: an idempotent call failed).",
		}, []string{"route", "reason"}),
		exhausted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "reelway_gateway_retry_budget_exhausted_total",
			Help: "Retries refused because the retry budget was spent.",
		}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "reelway_gateway_breaker_transitions_total",
			Help: "Circuit breaker state changes by instance and new state.",
		}, []string{"instance", "to"}),
	}
	reg.MustRegister(m.requests, m.retries, m.exhausted, m.transitions,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "reelway_gateway_catalog_age_seconds",
			Help: "Seconds since the route table last synced with the registry (grows while the registry is unreachable).",
		}, func() float64 { return g.routes.Age().Seconds() }),
		newBackendCollector(g),
	)
	return m
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

func (m *metrics) transition(id string, _, to circuitbreaker.State) {
	m.transitions.WithLabelValues(id, stateName(to)).Inc()
}

// done counts a finished request.
func (m *metrics) done(route string, wire rpc.Wire, end rpc.End) {
	m.requests.WithLabelValues(route, codeLabel(wire, end.Status, end.Code)).Inc()
}

// doneLabel counts a finished request under a code label worked out by the caller.
func (m *metrics) doneLabel(route, code string) {
	m.requests.WithLabelValues(route, code).Inc()
}

// failed counts a request the gateway answered itself.
func (m *metrics) failed(route string, wire rpc.Wire, status int, code connect.Code) {
	m.requests.WithLabelValues(route, codeLabel(wire, status, code)).Inc()
}

func codeLabel(wire rpc.Wire, status int, code connect.Code) string {
	if wire == rpc.WireHTTP {
		return strconv.Itoa(status)
	}
	if code == 0 {
		return "ok"
	}
	return code.String()
}

func stateName(s circuitbreaker.State) string {
	switch s {
	case circuitbreaker.OpenState:
		return "open"
	case circuitbreaker.HalfOpenState:
		return "half_open"
	}
	return "closed"
}

// backendCollector reports every known instance's breaker state and in-flight requests
// at scrape time.
type backendCollector struct {
	g                      *Gateway
	descBreaker, descInflt *prometheus.Desc
}

func newBackendCollector(g *Gateway) backendCollector {
	return backendCollector{
		g: g,
		descBreaker: prometheus.NewDesc("reelway_gateway_breaker_state",
			"Circuit breaker state per instance: 0 closed, 1 half-open, 2 open.", []string{"instance"}, nil),
		descInflt: prometheus.NewDesc("reelway_gateway_backend_inflight",
			"Requests in flight per instance.", []string{"instance"}, nil),
	}
}

func (c backendCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.descBreaker
	ch <- c.descInflt
}

func (c backendCollector) Collect(ch chan<- prometheus.Metric) {
	c.g.mu.RLock()
	defer c.g.mu.RUnlock()
	for id, be := range c.g.backends {
		v := 0.0
		switch be.breaker.State() {
		case circuitbreaker.HalfOpenState:
			v = 1
		case circuitbreaker.OpenState:
			v = 2
		}
		ch <- prometheus.MustNewConstMetric(c.descBreaker, prometheus.GaugeValue, v, id)
		ch <- prometheus.MustNewConstMetric(c.descInflt, prometheus.GaugeValue, float64(be.inflight.Load()), id)
	}
}

// errorBody labels an RPC answer whose HTTP status is not 200. For a Connect unary error
// it keeps the start of the body as it passes to the caller, so the call is counted under
// the code the backend wrote there: the status alone cannot tell (409 is already_exists
// or aborted, 400 invalid_argument, failed_precondition or out_of_range, 500 internal,
// unknown or data_loss). Any other such answer (a handler's bodyless 415 or 405, in any
// protocol) carries no RPC code at all, and is counted under its HTTP status. Answers with
// status 200 are not watched: a successful call costs nothing more.
type errorBody struct {
	rc   io.ReadCloser
	json bool // a Connect unary error body, JSON as Connect writes it
	head [128]byte
	n    int
}

// watchErrorBody returns an errorBody for an RPC answer whose status is not 200 (nil for
// any other), in front of its body when that may hold a Connect error.
func watchErrorBody(resp *http.Response, wire rpc.Wire) *errorBody {
	if wire == rpc.WireHTTP || resp.StatusCode == http.StatusOK {
		return nil
	}
	b := &errorBody{}
	if wire == rpc.WireConnectUnary && resp.Body != nil && resp.Body != http.NoBody && resp.Header.Get("Content-Encoding") == "" {
		ct, _, _ := strings.Cut(resp.Header.Get("Content-Type"), ";")
		if strings.EqualFold(strings.TrimSpace(ct), "application/json") {
			b.rc, b.json = resp.Body, true
			resp.Body = b
		}
	}
	return b
}

func (b *errorBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if b.n < len(b.head) {
		b.n += copy(b.head[b.n:], p[:n])
	}
	return n, err
}

func (b *errorBody) Close() error { return b.rc.Close() }

// label is the code label of the answer read to its end: the "code" field of its Connect
// JSON error body (connect-go writes it first), else the HTTP status, which is what is
// certain about an answer that carries no RPC code.
func (b *errorBody) label(status int) string {
	if b.json {
		if c, ok := jsonErrorCode(b.head[:b.n]); ok {
			return c.String()
		}
	}
	return strconv.Itoa(status)
}

// jsonErrorCode finds the "code" member of a Connect JSON error in the start of its body.
func jsonErrorCode(head []byte) (connect.Code, bool) {
	i := bytes.Index(head, []byte(`"code"`))
	if i < 0 {
		return 0, false
	}
	rest := bytes.TrimLeft(head[i+len(`"code"`):], " \t\r\n")
	if len(rest) == 0 || rest[0] != ':' {
		return 0, false
	}
	rest = bytes.TrimLeft(rest[1:], " \t\r\n")
	if len(rest) == 0 || rest[0] != '"' {
		return 0, false
	}
	name, _, ok := bytes.Cut(rest[1:], []byte(`"`))
	if !ok {
		return 0, false
	}
	var c connect.Code
	if err := c.UnmarshalText(name); err != nil {
		return 0, false
	}
	return c, true
}
