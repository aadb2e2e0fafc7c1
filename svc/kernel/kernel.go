package kernel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	eventsv1 "github.com/reelway/reelway/gen/reelway/events/v1"
	"github.com/reelway/reelway/svc/events"
	"github.com/reelway/reelway/svc/registry"
	"github.com/reelway/reelway/svc/rpc"
	"golang.org/x/sync/errgroup"
)

func rpcLogHandler(h slog.Handler) slog.Handler { return rpc.LogHandler{Handler: h} }

// Plugin is one service's contribution to a listener: it mounts its handlers.
type Plugin interface {
	Mount(srv *rpc.Server) error
}

// Starter is a plugin with background work (consumers, sweepers). Start runs until ctx
// ends; the work must stop promptly then.
type Starter interface {
	Start(ctx context.Context) error
}

// Closer is a plugin holding resources (databases) released after the listener stops.
type Closer interface {
	Close() error
}

// Runtime is what the services of one process share: logger, event bus, registry,
// catalog and client pool.
type Runtime struct {
	Config   Config
	Log      *slog.Logger
	Bus      *events.Bus
	Registry registry.Registry
	Catalog  *registry.Catalog
	Pool     *rpc.Pool
	// Metrics is the process's Prometheus registry, served at GET /metrics by every
	// service (the gateway adds its own series to it).
	Metrics *prometheus.Registry

	stopCatalog context.CancelFunc
	catalogDone chan struct{}
	// OnReady, if set, is called when a service is listening and registered.
	OnReady func(service string, addr net.Addr)
}

// NewRuntime connects the bus, follows the registry and builds the client pool.
func NewRuntime(ctx context.Context, cfg Config, log *slog.Logger, reg registry.Registry, natsURL string) (*Runtime, error) {
	bus, err := events.Connect(ctx, natsURL, cfg.Service, log)
	if err != nil {
		return nil, fmt.Errorf("connect bus: %w", err)
	}
	// The stream must exist before anyone publishes; a NATS server that is not up yet is
	// retried in the background by the bus, so only a definite refusal fails start-up.
	ensureCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = bus.EnsureStream(ensureCtx, cfg.EventsMaxAge, cfg.EventsMaxBytes)
	cancel()
	if err != nil {
		_ = bus.Close(ctx)
		return nil, fmt.Errorf("ensure events stream: %w", err)
	}
	metrics := prometheus.NewRegistry()
	metrics.MustRegister(events.Collectors(bus)...)
	catalog := registry.NewCatalog(reg, log)
	catCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = catalog.Run(catCtx)
	}()
	return &Runtime{
		Config:      cfg,
		Log:         log,
		Bus:         bus,
		Registry:    reg,
		Catalog:     catalog,
		Pool:        rpc.NewPool(catalog, log),
		Metrics:     metrics,
		stopCatalog: stop,
		catalogDone: done,
	}, nil
}

// Close releases the shared pieces in reverse order: client pool, catalog watch, then the
// bus is drained within ctx.
func (rt *Runtime) Close(ctx context.Context) error {
	rt.Pool.Close()
	rt.stopCatalog()
	<-rt.catalogDone
	return rt.Bus.Close(ctx)
}

// Status is what /healthz reports about the process's connections.
func (rt *Runtime) Status() any {
	return HealthDetail{NATS: rt.Bus.Status(), CatalogAgeSeconds: rt.Catalog.Age().Seconds()}
}

// HealthDetail is the body of /healthz's "detail".
type HealthDetail struct {
	NATS              events.Status `json:"nats"`
	CatalogAgeSeconds float64       `json:"catalogAgeSeconds"`
}

// Degraded reports that events cannot flow: the bus is not connected.
func (h HealthDetail) Degraded() bool { return !h.NATS.Connected }

// Serve runs one service: listen → register → start plugins → serve; when ctx ends:
// deregister → stop plugins and drain requests within the shutdown timeout → close plugins.
func (rt *Runtime) Serve(ctx context.Context, service string, plugins ...Plugin) error {
	log := rt.Log.With("service", service)
	srv := rpc.NewServer(log, rt.Status)
	for _, p := range plugins {
		if err := p.Mount(srv); err != nil {
			return fmt.Errorf("mount %s: %w", service, err)
		}
	}
	defer func() {
		for i := len(plugins) - 1; i >= 0; i-- {
			if c, ok := plugins[i].(Closer); ok {
				if err := c.Close(); err != nil {
					log.Warn("plugin.close", "err", err)
				}
			}
		}
	}()

	if !srv.HasRoute("GET /metrics") {
		srv.Handle("GET /metrics", promhttp.HandlerFor(rt.Metrics, promhttp.HandlerOpts{}))
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(rt.Config.Host, strconv.Itoa(rt.Config.PortFor(service))))
	if err != nil {
		return fmt.Errorf("listen %s: %w", service, err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln = rpc.LingerListener(ln)
	httpSrv := rpc.NewHTTPServer(srv.Handler(), log)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := httpSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve %s: %w", service, err)
		}
		return nil
	})

	id := registry.InstanceID(service, port)
	reg := registry.Registration{
		Instance: registry.Instance{
			ID:      id,
			Name:    service,
			Address: rt.Config.Host,
			Port:    port,
			Tags:    registry.DefaultTags,
			Meta: map[string]string{
				registry.MetaProtoServices: strings.Join(srv.ProtoServices(), ","),
				registry.MetaVersion:       rt.Config.Version,
			},
		},
		HealthURL:       fmt.Sprintf("http://%s/healthz", net.JoinHostPort(rt.Config.Host, strconv.Itoa(port))),
		CheckInterval:   time.Second,
		DeregisterAfter: time.Minute,
	}
	if err := rt.Registry.Register(ctx, reg); err != nil {
		_ = httpSrv.Close()
		_ = g.Wait()
		return fmt.Errorf("register %s: %w", service, err)
	}
	log.Info("registered", "id", id, "addr", ln.Addr().String(), "proto_services", srv.ProtoServices())
	rt.publish(ctx, log, events.ServiceRegistered(service, id, ln.Addr().String()))
	if rt.OnReady != nil {
		rt.OnReady(service, ln.Addr())
	}

	pluginCtx, stopPlugins := context.WithCancel(context.WithoutCancel(ctx))
	defer stopPlugins()
	pg, _ := errgroup.WithContext(pluginCtx)
	for _, p := range plugins {
		if s, ok := p.(Starter); ok {
			pg.Go(func() error { return s.Start(pluginCtx) })
		}
	}

	g.Go(func() error {
		<-gctx.Done()
		// Deregister first so the gateway stops routing here before the listener closes.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		if err := rt.Registry.Deregister(dctx, id); err != nil {
			log.Warn("deregister", "err", err)
		} else {
			log.Info("deregistered", "id", id)
		}
		rt.publish(dctx, log, events.ServiceDeregistered(service, id))
		cancel()
		// Keep serving while watchers (gateways, pools) learn of the deregistration: a
		// request routed here in that window still succeeds instead of meeting a closed
		// listener.
		time.Sleep(rt.Config.DeregisterGrace)

		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rt.Config.ShutdownTimeout)
		defer cancel()
		stopPlugins()
		if err := httpSrv.Shutdown(sctx); err != nil {
			log.Warn("shutdown", "err", err)
			_ = httpSrv.Close()
		}
		return nil
	})
	err = g.Wait()
	stopPlugins()
	if perr := pg.Wait(); perr != nil && !errors.Is(perr, context.Canceled) {
		err = errors.Join(err, fmt.Errorf("plugin %s: %w", service, perr))
	}
	log.Info("stopped")
	return err
}

// publish sends a lifecycle event. Registration events are informational (the registry
// is the source of truth), so a bus that is down delays nothing beyond a short wait.
func (rt *Runtime) publish(ctx context.Context, log *slog.Logger, ev *eventsv1.Event) {
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := rt.Bus.Publish(pctx, ev); err != nil {
		log.Warn("event.publish", "type", events.Name(ev.GetType()), "err", err)
	}
}
