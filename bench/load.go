package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"connectrpc.com/connect"
	cachev1 "github.com/reelway/reelway/gen/reelway/cache/v1"
	metadatav1 "github.com/reelway/reelway/gen/reelway/metadata/v1"
	"golang.org/x/net/http2"
)

// result is one load run.
type result struct {
	Label  string
	Proto  string
	Conc   int
	N      int
	Errors int
	RPS    float64
	P50    time.Duration
	P99    time.Duration
	// CPUPerCall is the proxy process's CPU time per call, when measured.
	CPUPerCall time.Duration
}

// newH2C returns a client whose one HTTP/2 transport (one shared connection pool) every
// worker uses, as a gRPC channel would.
func newH2C() *http.Client {
	return &http.Client{Transport: &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}}
}

func protoOpts(proto string) []connect.ClientOption {
	switch proto {
	case "connect-json":
		return []connect.ClientOption{connect.WithProtoJSON()}
	case "grpc":
		return []connect.ClientOption{connect.WithGRPC()}
	}
	return nil
}

// call is one kind of unary call the load generator makes.
type call func(base, proto string, hc *http.Client) func(context.Context) error

// cacheGet is CacheService.Get with a small key: a trivial handler.
func cacheGet(base, proto string, hc *http.Client) func(context.Context) error {
	c := connect.NewClient[cachev1.GetRequest, cachev1.GetResponse](hc, base+"/reelway.cache.v1.CacheService/Get", protoOpts(proto)...)
	req := &cachev1.GetRequest{Key: "bench"}
	return func(ctx context.Context) error {
		_, err := c.CallUnary(ctx, connect.NewRequest(req))
		return err
	}
}

// getVideo is MetadataService.GetVideo on the real metadata service (SQLite).
func getVideo(id string) call {
	return func(base, proto string, hc *http.Client) func(context.Context) error {
		c := connect.NewClient[metadatav1.GetVideoRequest, metadatav1.GetVideoResponse](hc, base+"/reelway.metadata.v1.MetadataService/GetVideo", protoOpts(proto)...)
		req := &metadatav1.GetVideoRequest{Id: id}
		return func(ctx context.Context) error {
			_, err := c.CallUnary(ctx, connect.NewRequest(req))
			return err
		}
	}
}

// runLoad keeps conc calls in flight for warm+dur and measures the last dur.
func runLoad(label, base, proto string, mk call, conc int, warm, dur time.Duration) result {
	hc := newH2C()
	defer hc.CloseIdleConnections()
	start := time.Now()
	measureFrom := start.Add(warm)
	end := measureFrom.Add(dur)
	lats := make([][]time.Duration, conc)
	errs := make([]int, conc)
	var wg sync.WaitGroup
	for w := range conc {
		fn := mk(base, proto, hc)
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]time.Duration, 0, 1<<16)
			for {
				t0 := time.Now()
				if t0.After(end) {
					break
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				err := fn(ctx)
				cancel()
				if t0.Before(measureFrom) {
					continue
				}
				if err != nil {
					errs[w]++
					continue
				}
				buf = append(buf, time.Since(t0))
			}
			lats[w] = buf
		}()
	}
	wg.Wait()
	var all []time.Duration
	r := result{Label: label, Proto: proto, Conc: conc}
	for w := range conc {
		all = append(all, lats[w]...)
		r.Errors += errs[w]
	}
	slices.Sort(all)
	r.N = len(all)
	r.RPS = float64(r.N) / dur.Seconds()
	if len(all) > 0 {
		r.P50 = all[len(all)*50/100]
		r.P99 = all[len(all)*99/100]
	}
	return r
}

func (r result) String() string {
	return fmt.Sprintf("%-10s %-13s c=%-3d %8.0f rps  p50 %8s  p99 %8s  errors %d  cpu/call %s", r.Label, r.Proto, r.Conc, r.RPS, r.P50.Round(time.Microsecond), r.P99.Round(time.Microsecond), r.Errors, r.CPUPerCall.Round(time.Microsecond))
}
