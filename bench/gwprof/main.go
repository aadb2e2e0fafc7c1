// Command gwprof runs the gateway as `reelway serve gateway` wires it (registry catalog
// from Consul, rpc.Server, h2c listener) with net/http/pprof on REELWAY_PPROF_ADDR, for
// `go run ./bench -gwprof`. It skips what the profile does not need: NATS and the
// gateway's own registration.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/reelway/reelway/gateway"
	"github.com/reelway/reelway/gen/reelway/auth/v1/authv1connect"
	"github.com/reelway/reelway/gen/reelway/cache/v1/cachev1connect"
	"github.com/reelway/reelway/gen/reelway/gateway/v1/gatewayv1connect"
	"github.com/reelway/reelway/gen/reelway/metadata/v1/metadatav1connect"
	"github.com/reelway/reelway/svc/registry"
	"github.com/reelway/reelway/svc/rpc"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "gwprof:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	go func() { _ = http.ListenAndServe(os.Getenv("REELWAY_PPROF_ADDR"), mux) }()

	reg, err := registry.NewConsul(os.Getenv("REELWAY_CONSUL_ADDR"), log)
	if err != nil {
		return err
	}
	cat := registry.NewCatalog(reg, log)
	go func() { _ = cat.Run(ctx) }()
	known := []string{gatewayv1connect.GatewayServiceName, cachev1connect.CacheServiceName,
		metadatav1connect.MetadataServiceName, authv1connect.AuthServiceName}
	gw := gateway.New(log, cat, known, gateway.Options{Metrics: prometheus.NewRegistry()})
	srv := rpc.NewServer(log, func() any { return map[string]any{"catalogAgeSeconds": cat.Age().Seconds()} })
	if err := gw.Mount(srv); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:"+os.Getenv("REELWAY_PORT"))
	if err != nil {
		return err
	}
	hs := rpc.NewHTTPServer(srv.Handler(), log)
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
	}()
	if err := hs.Serve(ln); err != nil && err != http.ErrServerClosed {
		return err
	}
	return nil
}
