// Package platform wires Reelway's nine services explicitly: which constructor each service
// gets, with which dependencies, and how `reelway dev` runs them all in one process.
package platform

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"

	"github.com/reelway/reelway/gateway"
	"github.com/reelway/reelway/gen/reelway/auth/v1/authv1connect"
	"github.com/reelway/reelway/gen/reelway/cache/v1/cachev1connect"
	"github.com/reelway/reelway/gen/reelway/gateway/v1/gatewayv1connect"
	"github.com/reelway/reelway/gen/reelway/metadata/v1/metadatav1connect"
	"github.com/reelway/reelway/gen/reelway/monitor/v1/monitorv1connect"
	"github.com/reelway/reelway/gen/reelway/streaming/v1/streamingv1connect"
	"github.com/reelway/reelway/gen/reelway/transcoder/v1/transcoderv1connect"
	"github.com/reelway/reelway/gen/reelway/upload/v1/uploadv1connect"
	"github.com/reelway/reelway/gen/reelway/worker/v1/workerv1connect"
	"github.com/reelway/reelway/svc/auth"
	"github.com/reelway/reelway/svc/cache"
	"github.com/reelway/reelway/svc/events"
	"github.com/reelway/reelway/svc/kernel"
	"github.com/reelway/reelway/svc/metadata"
	"github.com/reelway/reelway/svc/monitor"
	"github.com/reelway/reelway/svc/registry"
	"github.com/reelway/reelway/svc/rpc"
	"github.com/reelway/reelway/svc/streaming"
	"github.com/reelway/reelway/svc/transcoder"
	"github.com/reelway/reelway/svc/upload"
	"github.com/reelway/reelway/svc/worker"
	"golang.org/x/sync/errgroup"
)

// Errors of the platform wiring.
var (
	// ErrUnknownService means a service name is not one of the nine.
	ErrUnknownService = errors.New("platform: unknown service")
	// ErrNoNATS means a separate service process was started without a NATS URL.
	ErrNoNATS = errors.New("platform: REELWAY_NATS_URL is required for a separate service process")
)

// ProtoServices lists every proto service of the schema.
func ProtoServices() []string {
	return []string{
		gatewayv1connect.GatewayServiceName,
		uploadv1connect.UploadServiceName,
		transcoderv1connect.TranscoderServiceName,
		streamingv1connect.StreamingServiceName,
		metadatav1connect.MetadataServiceName,
		cachev1connect.CacheServiceName,
		authv1connect.AuthServiceName,
		workerv1connect.WorkerServiceName,
		monitorv1connect.MonitorServiceName,
	}
}

// Serve runs one service as its own process against external NATS and, when configured,
// Consul.
func Serve(ctx context.Context, cfg kernel.Config, log *slog.Logger) error {
	if kernel.DefaultPort(cfg.Service) == 0 {
		return fmt.Errorf("%w: %q", ErrUnknownService, cfg.Service)
	}
	if cfg.NATSURL == "" {
		return ErrNoNATS
	}
	if cfg.ConsulAddr == "" {
		log.Warn("registry.embedded", "hint", "REELWAY_CONSUL_ADDR is not set: this process uses a catalog of its own and other processes cannot find it")
	}
	reg, closeReg, err := newRegistry(cfg, log)
	if err != nil {
		return err
	}
	defer closeReg()
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return fmt.Errorf("make data dir: %w", err)
	}
	rt, err := kernel.NewRuntime(ctx, cfg, log, reg, cfg.NATSURL)
	if err != nil {
		return err
	}
	defer closeRuntime(rt, cfg, log)
	plugins, err := build(ctx, rt, cfg.Service)
	if err != nil {
		return err
	}
	return rt.Serve(ctx, cfg.Service, plugins...)
}

// Dev runs all nine services in this process with an embedded NATS server and, unless a
// Consul address is configured, the embedded catalog. onReady, if set, hears of each
// service once it is listening and registered.
func Dev(ctx context.Context, cfg kernel.Config, log *slog.Logger, onReady func(service string, addr net.Addr)) error {
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return fmt.Errorf("make data dir: %w", err)
	}
	natsURL := cfg.NATSURL
	if natsURL == "" {
		ns, err := events.StartServer(cfg.Host, cfg.NATSPort, cfg.DataDir)
		if err != nil {
			return fmt.Errorf("start embedded nats: %w", err)
		}
		defer ns.Shutdown()
		natsURL = ns.URL()
		log.Info("nats.embedded", "url", natsURL)
	}
	reg, closeReg, err := newRegistry(cfg, log)
	if err != nil {
		return err
	}
	defer closeReg()
	rt, err := kernel.NewRuntime(ctx, cfg, log, reg, natsURL)
	if err != nil {
		return err
	}
	rt.OnReady = onReady
	defer closeRuntime(rt, cfg, log)

	return serveInTiers(ctx, rt)
}

// shutdownTiers is the order `reelway dev` stops its services in: the front door first, so
// no new work arrives; then the services that call others, which finish their in-flight
// requests while their dependencies still answer; the store last. Every service starts at
// once: the gateway and pool route only to instances whose health check passes.
func shutdownTiers() [][]string {
	return [][]string{
		{"gateway"},
		{"upload", "worker", "monitor"},
		{"streaming", "transcoder", "auth", "cache"},
		{"metadata"},
	}
}

func serveInTiers(ctx context.Context, rt *kernel.Runtime) error {
	type tier struct {
		stop context.CancelFunc
		g    *errgroup.Group
	}
	// A service that fails stops the whole platform, in the same order.
	failed, fail := context.WithCancel(ctx)
	defer fail()
	var tiers []tier
	for _, names := range shutdownTiers() {
		tctx, stop := context.WithCancel(context.WithoutCancel(ctx))
		g := &errgroup.Group{}
		for _, service := range names {
			plugins, err := build(ctx, rt, service)
			if err != nil {
				stop()
				fail()
				for i := len(tiers) - 1; i >= 0; i-- {
					tiers[i].stop()
					_ = tiers[i].g.Wait()
				}
				return err
			}
			g.Go(func() error {
				err := rt.Serve(tctx, service, plugins...)
				if err != nil {
					fail()
				}
				return err
			})
		}
		tiers = append(tiers, tier{stop: stop, g: g})
	}
	<-failed.Done()
	var errs []error
	for _, t := range tiers {
		t.stop()
		if err := t.g.Wait(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func closeRuntime(rt *kernel.Runtime, cfg kernel.Config, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := rt.Close(ctx); err != nil {
		log.Warn("runtime.close", "err", err)
	}
}

// openOutbox opens the outbox a service publishes through, <data>/outbox/<service>.db, so
// its events survive a NATS outage and a restart of the process.
func openOutbox(ctx context.Context, rt *kernel.Runtime, service string, log *slog.Logger) (*events.Outbox, error) {
	dir := filepath.Join(rt.Config.DataDir, "outbox")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("make outbox dir: %w", err)
	}
	ob, err := events.OpenOutbox(ctx, filepath.Join(dir, service+".db"), rt.Bus, log, events.OutboxConfig{})
	if err != nil {
		return nil, fmt.Errorf("open %s outbox: %w", service, err)
	}
	return ob, nil
}

func newRegistry(cfg kernel.Config, log *slog.Logger) (registry.Registry, func(), error) {
	if cfg.ConsulAddr == "" {
		m := registry.NewMemory(log)
		return m, m.Close, nil
	}
	c, err := registry.NewConsul(cfg.ConsulAddr, log)
	if err != nil {
		return nil, nil, err
	}
	return c, func() {}, nil
}

// build constructs one service's plugin with its dependencies.
func build(ctx context.Context, rt *kernel.Runtime, service string) ([]kernel.Plugin, error) {
	cfg, log := rt.Config, rt.Log.With("service", service)
	pool := rt.Pool
	metadataClient := func() metadatav1connect.MetadataServiceClient {
		return metadatav1connect.NewMetadataServiceClient(pool.HTTPClient("metadata"), rpc.BaseURL("metadata"), pool.ClientOptions()...)
	}
	switch service {
	case "metadata":
		ob, err := openOutbox(ctx, rt, service, log)
		if err != nil {
			return nil, err
		}
		store, err := metadata.OpenStore(ctx, metadata.Config{DataDir: cfg.DataDir, DatabaseURL: string(cfg.DatabaseURL)}, log)
		if err != nil {
			_ = ob.Close()
			return nil, fmt.Errorf("open metadata: %w", err)
		}
		return []kernel.Plugin{ob, metadata.New(store, log, ob)}, nil
	case "cache":
		return []kernel.Plugin{cache.New(log, 100_000)}, nil
	case "auth":
		svc, err := auth.Open(ctx, cfg.DataDir, []byte(cfg.AuthSecret), log, rt.Bus)
		if err != nil {
			return nil, fmt.Errorf("open auth: %w", err)
		}
		return []kernel.Plugin{svc}, nil
	case "transcoder":
		ladder, err := transcoder.ParseLadder(cfg.TranscodeLadder)
		if err != nil {
			return nil, fmt.Errorf("REELWAY_TRANSCODE_LADDER: %w", err)
		}
		return []kernel.Plugin{transcoder.New(log, transcoder.Config{
			DataDir:       cfg.DataDir,
			Ladder:        ladder,
			MaxConcurrent: cfg.TranscodeConcurrency,
			JobTimeout:    cfg.TranscodeTimeout,
		}, rt.Bus)}, nil
	case "streaming":
		users := authv1connect.NewAuthServiceClient(pool.HTTPClient("auth"), rpc.BaseURL("auth"), pool.ClientOptions()...)
		svc, err := streaming.New(log, streaming.Config{
			DataDir:  cfg.DataDir,
			Secret:   []byte(cfg.PlaybackSecret),
			TokenTTL: cfg.PlaybackTokenTTL,
		}, metadataClient(), users)
		if err != nil {
			return nil, fmt.Errorf("open streaming: %w", err)
		}
		return []kernel.Plugin{svc}, nil
	case "upload":
		ob, err := openOutbox(ctx, rt, service, log)
		if err != nil {
			return nil, err
		}
		users := authv1connect.NewAuthServiceClient(pool.HTTPClient("auth"), rpc.BaseURL("auth"), pool.ClientOptions()...)
		return []kernel.Plugin{ob, upload.New(log, upload.Config{DataDir: cfg.DataDir, MaxBytes: cfg.UploadMaxBytes, Expiry: cfg.UploadExpiry, IdleTimeout: cfg.UploadIdleTimeout}, ob, metadataClient(), users)}, nil
	case "worker":
		ob, err := openOutbox(ctx, rt, service, log)
		if err != nil {
			return nil, err
		}
		tc := transcoderv1connect.NewTranscoderServiceClient(pool.HTTPClient("transcoder"), rpc.BaseURL("transcoder"), pool.ClientOptions()...)
		w, err := worker.Open(ctx, log, worker.Config{
			DataDir:       cfg.DataDir,
			MaxConcurrent: cfg.WorkerConcurrency,
			MaxAttempts:   cfg.WorkerMaxAttempts,
			RetryBackoff:  cfg.WorkerBackoff,
			AckWait:       cfg.WorkerAckWait,
			Grace:         cfg.ShutdownTimeout / 2,
		}, rt.Bus, ob, metadataClient(), tc)
		if err != nil {
			_ = ob.Close()
			return nil, fmt.Errorf("open worker: %w", err)
		}
		return []kernel.Plugin{ob, w}, nil
	case "monitor":
		return []kernel.Plugin{monitor.New(log, rt.Catalog)}, nil
	case "gateway":
		// The gateway's /metrics is the process's registry, so it also shows the NATS
		// connection every service's /metrics reports.
		reg := rt.Metrics
		return []kernel.Plugin{gateway.New(log, rt.Catalog, ProtoServices(), gateway.Options{
			Timeout:     cfg.GatewayTimeout,
			CORSOrigins: cfg.CORSOrigins,
			Metrics:     reg,
		})}, nil
	}
	return nil, fmt.Errorf("%w: %q", ErrUnknownService, service)
}
