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

	g, gctx := errgroup.WithContext(ctx)
	for _, service := range kernel.Services() {
		plugins, err := build(ctx, rt, service)
		if err != nil {
			return err
		}
		g.Go(func() error { return rt.Serve(gctx, service, plugins...) })
	}
	return g.Wait()
}

func closeRuntime(rt *kernel.Runtime, cfg kernel.Config, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := rt.Close(ctx); err != nil {
		log.Warn("runtime.close", "err", err)
	}
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
		svc, err := metadata.Open(ctx, cfg.DataDir, log, rt.Bus)
		if err != nil {
			return nil, fmt.Errorf("open metadata: %w", err)
		}
		return []kernel.Plugin{svc}, nil
	case "cache":
		return []kernel.Plugin{cache.New(log, 100_000)}, nil
	case "auth":
		svc, err := auth.Open(ctx, cfg.DataDir, []byte(cfg.AuthSecret), log, rt.Bus)
		if err != nil {
			return nil, fmt.Errorf("open auth: %w", err)
		}
		return []kernel.Plugin{svc}, nil
	case "transcoder":
		return []kernel.Plugin{transcoder.New(log, transcoder.Config{DataDir: cfg.DataDir}, rt.Bus)}, nil
	case "streaming":
		return []kernel.Plugin{streaming.New(log, cfg.DataDir)}, nil
	case "upload":
		return []kernel.Plugin{upload.New(log, upload.Config{DataDir: cfg.DataDir, MaxBytes: cfg.UploadMaxBytes}, rt.Bus, metadataClient())}, nil
	case "worker":
		tc := transcoderv1connect.NewTranscoderServiceClient(pool.HTTPClient("transcoder"), rpc.BaseURL("transcoder"), pool.ClientOptions()...)
		return []kernel.Plugin{worker.New(log, worker.Config{}, rt.Bus.JetStream(), rt.Bus, metadataClient(), tc)}, nil
	case "monitor":
		return []kernel.Plugin{monitor.New(log, rt.Catalog)}, nil
	case "gateway":
		return []kernel.Plugin{gateway.New(log, rt.Catalog, ProtoServices())}, nil
	}
	return nil, fmt.Errorf("%w: %q", ErrUnknownService, service)
}
