package events_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	eventsv1 "github.com/reelway/reelway/gen/reelway/events/v1"
	"github.com/reelway/reelway/svc/events"
	"google.golang.org/protobuf/proto"
)

// BenchmarkBus compares the project's bus with raw nats.go JetStream on the same embedded
// server in the same run (`just bench-events`):
//
//   - publish/*: publishes acknowledged by JetStream, one at a time (the bus always waits
//     for the ack); ns/op and events/s. outbox adds the SQLite write and delete of the
//     durable outbox the upload, metadata and worker services publish through.
//   - latency/*: publish → handler latency at a moderate paced load of 1000 events/s, the
//     bus through Publish and Consume with a typed Router handler, raw through
//     js.PublishMsg and a pull consumer's Consume callback; p50 and p99 in milliseconds.
//
// With REELWAY_BENCH_FILE set, the results replace the events section of that file.
func BenchmarkBus(b *testing.B) {
	res := benchResults{load: loadAverage()}
	srv, err := events.StartServer("127.0.0.1", 0, b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Shutdown()
	ctx := context.Background()
	bus, err := events.Connect(ctx, srv.URL(), "bench", quietLog())
	if err != nil {
		b.Fatal(err)
	}
	defer bus.Close(ctx)
	if err := bus.EnsureStream(ctx, time.Hour, 8<<30); err != nil {
		b.Fatal(err)
	}
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	sample := events.UploadCompleted("upload", "abcdefghijklmnopqrst", 1<<20, "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
	payload, err := proto.Marshal(sample)
	if err != nil {
		b.Fatal(err)
	}

	b.Run("publish/raw", func(b *testing.B) {
		b.ReportAllocs()
		for i := range b.N {
			msg := nats.NewMsg("reelway.events.bench.raw")
			msg.Data = payload
			msg.Header.Set(jetstream.MsgIDHeader, "raw-"+strconv.Itoa(i)+"-"+strconv.Itoa(b.N))
			if _, err := js.PublishMsg(ctx, msg); err != nil {
				b.Fatal(err)
			}
		}
		res.raw = float64(b.N) / b.Elapsed().Seconds()
		b.ReportMetric(res.raw, "events/s")
	})
	b.Run("publish/bus", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			if err := bus.Publish(ctx, events.UploadCompleted("upload", "abcdefghijklmnopqrst", 1<<20, sample.GetUploadCompleted().GetSha256())); err != nil {
				b.Fatal(err)
			}
		}
		res.bus = float64(b.N) / b.Elapsed().Seconds()
		b.ReportMetric(res.bus, "events/s")
	})
	b.Run("publish/outbox", func(b *testing.B) {
		ob, err := events.OpenOutbox(ctx, filepath.Join(b.TempDir(), "outbox.db"), bus, quietLog(), events.OutboxConfig{})
		if err != nil {
			b.Fatal(err)
		}
		defer ob.Close()
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			if err := ob.Publish(ctx, events.UploadCompleted("upload", "abcdefghijklmnopqrst", 1<<20, sample.GetUploadCompleted().GetSha256())); err != nil {
				b.Fatal(err)
			}
		}
		res.outbox = float64(b.N) / b.Elapsed().Seconds()
		b.ReportMetric(res.outbox, "events/s")
	})

	const rate = 1000 // events per second: moderate load
	b.Run(fmt.Sprintf("latency/raw@%d/s", rate), func(b *testing.B) {
		subject := "reelway.events.bench.latency"
		cons, err := js.CreateOrUpdateConsumer(ctx, events.StreamName, jetstream.ConsumerConfig{
			Durable: "bench-raw", FilterSubject: subject, AckPolicy: jetstream.AckExplicitPolicy, DeliverPolicy: jetstream.DeliverNewPolicy,
		})
		if err != nil {
			b.Fatal(err)
		}
		lat := newLatencies(b.N)
		cc, err := cons.Consume(func(m jetstream.Msg) {
			sent, _ := strconv.ParseInt(m.Headers().Get("Sent"), 10, 64)
			lat.add(time.Since(time.Unix(0, sent)))
			_ = m.Ack()
		}, jetstream.PullMaxMessages(100))
		if err != nil {
			b.Fatal(err)
		}
		defer cc.Stop()
		paced(b, rate, func(i int) {
			msg := nats.NewMsg(subject)
			msg.Data = payload
			msg.Header.Set("Sent", strconv.FormatInt(time.Now().UnixNano(), 10))
			msg.Header.Set(jetstream.MsgIDHeader, "lat-"+strconv.Itoa(i)+"-"+strconv.Itoa(b.N))
			if _, err := js.PublishMsg(ctx, msg); err != nil {
				b.Fatal(err)
			}
		})
		res.rawP50, res.rawP99 = lat.report(b)
	})
	b.Run(fmt.Sprintf("latency/bus@%d/s", rate), func(b *testing.B) {
		lat := newLatencies(b.N)
		r := events.NewRouter(quietLog())
		if err := events.On(r, func(_ context.Context, ev *eventsv1.Event, _ *eventsv1.VideoReady) error {
			lat.add(time.Since(ev.GetTime().AsTime()))
			return nil
		}); err != nil {
			b.Fatal(err)
		}
		cctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			done <- bus.Consume(cctx, events.ConsumeConfig{Durable: "bench-bus-" + strconv.Itoa(b.N), DeliverNew: true}, r)
		}()
		time.Sleep(200 * time.Millisecond) // the consumer exists before the first event
		paced(b, rate, func(int) {
			if err := bus.Publish(ctx, events.VideoReady("worker", "abcdefghijklmnopqrst", "/v1/hls/abcdefghijklmnopqrst/master.m3u8")); err != nil {
				b.Fatal(err)
			}
		})
		res.busP50, res.busP99 = lat.report(b)
		cancel()
		<-done
	})
	if path := os.Getenv("REELWAY_BENCH_FILE"); path != "" {
		if err := writeSection(path, res.markdown(rate)); err != nil {
			b.Fatal(err)
		}
	}
}

// benchResults are the last (largest) run of each sub-benchmark.
type benchResults struct {
	raw, bus, outbox               float64 // events/s
	rawP50, rawP99, busP50, busP99 float64 // ms
	load                           string  // 1-minute load average when the run started
}

func (r benchResults) markdown(rate int) string {
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "**missed**"
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "## Events: the bus against raw JetStream\n\n")
	fmt.Fprintf(&sb, "Run %s on %d cores (%s), `go test ./svc/events -run '^$' -bench BenchmarkBus -benchtime 3s` via `just bench-events`. ",
		time.Now().UTC().Format("2006-01-02"), runtime.NumCPU(), cpuModel())
	fmt.Fprintf(&sb, "One embedded NATS server with JetStream on file storage (the events stream, deduplication by Nats-Msg-Id), the bus and a raw nats.go client in the same process and run. ")
	fmt.Fprintf(&sb, "Publishes are synchronous (each waits for the JetStream ack, as Bus.Publish always does); latency is from just before publishing to the handler, at a paced %d events/s. ", rate)
	fmt.Fprintf(&sb, "The machine is shared: 1-minute load average %s when the run started.\n\n", r.load)
	fmt.Fprintf(&sb, "| path | events/s | vs raw | p50 publish→handler | p99 publish→handler |\n|---|---:|---:|---:|---:|\n")
	fmt.Fprintf(&sb, "| raw nats.go JetStream (PublishMsg, pull Consume) | %.0f | 1.00× | %.2f ms | %.2f ms |\n", r.raw, r.rawP50, r.rawP99)
	fmt.Fprintf(&sb, "| bus (Bus.Publish, Bus.Consume with a typed Router handler) | %.0f | %.2f× | %.2f ms | %.2f ms |\n", r.bus, r.bus/r.raw, r.busP50, r.busP99)
	fmt.Fprintf(&sb, "| outbox (SQLite insert, publish, delete) | %.0f | %.2f× | | |\n\n", r.outbox, r.outbox/r.raw)
	fmt.Fprintf(&sb, "Targets: bus ≥ 0.5× raw throughput: %s (%.2f×); bus p99 ≤ 5 ms at %d events/s: %s (%.2f ms).\n",
		verdict(r.bus >= 0.5*r.raw), r.bus/r.raw, rate, verdict(r.busP99 <= 5), r.busP99)
	return sb.String()
}

func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	if f := strings.Fields(string(b)); len(f) > 0 {
		return f[0]
	}
	return "unknown"
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

// writeSection replaces the text between the events markers of the file, or appends a
// marked section; the other sections stay as they are.
func writeSection(path, body string) error {
	const start, end = "<!-- bench:events:start -->", "<!-- bench:events:end -->"
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	text := string(old)
	if text == "" {
		text = "# Benchmarks\n"
	}
	section := start + "\n" + body + end
	if i, j := strings.Index(text, start), strings.Index(text, end); i >= 0 && j > i {
		text = text[:i] + section + text[j+len(end):]
	} else {
		text = strings.TrimRight(text, "\n") + "\n\n" + section + "\n"
	}
	return os.WriteFile(path, []byte(text), 0o644)
}

// paced calls publish b.N times at rate per second and waits for the deliveries.
func paced(b *testing.B, rate int, publish func(i int)) {
	b.Helper()
	interval := time.Second / time.Duration(rate)
	start := time.Now()
	b.ResetTimer()
	for i := range b.N {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		publish(i)
	}
}

// latencies collects delivery latencies until all b.N have arrived.
type latencies struct {
	mu   sync.Mutex
	want int
	got  []time.Duration
	done chan struct{}
}

func newLatencies(n int) *latencies {
	return &latencies{want: n, done: make(chan struct{})}
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.got = append(l.got, d)
	if len(l.got) == l.want {
		close(l.done)
	}
}

func (l *latencies) report(b *testing.B) (p50, p99 float64) {
	b.Helper()
	select {
	case <-l.done:
	case <-time.After(30 * time.Second):
		b.Fatalf("only %d of %d events delivered", len(l.got), l.want)
	}
	b.StopTimer()
	l.mu.Lock()
	defer l.mu.Unlock()
	s := slices.Clone(l.got)
	slices.Sort(s)
	q := func(p float64) float64 {
		return float64(s[min(len(s)-1, int(p*float64(len(s))))].Microseconds()) / 1000
	}
	b.ReportMetric(q(0.50), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(0, "ns/op")
	return q(0.50), q(0.99)
}
