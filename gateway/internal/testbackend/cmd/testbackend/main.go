// Command testbackend runs one testbackend instance as its own process: it listens (h2c),
// registers in Consul like a Reelway service (with the registry's keeper, so it survives
// an agent restart), and on SIGINT/SIGTERM deregisters, drains and exits 0. With Consul,
// POST /deregister and POST /register take it out of the registry and put it back while
// it keeps serving (discovery measurements).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/reelway/reelway/gateway/internal/testbackend"
	"github.com/reelway/reelway/svc/registry"
	"github.com/reelway/reelway/svc/rpc"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "testbackend:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("testbackend", flag.ContinueOnError)
	consul := fs.String("consul", "", "Consul agent host:port (empty: do not register)")
	host := fs.String("host", "127.0.0.1", "listen and advertise address")
	port := fs.Int("port", 0, "listen port (0: any)")
	name := fs.String("name", "cache", "registered service name")
	mode := fs.String("mode", testbackend.ModeOK, "ok or internal")
	delay := fs.Duration("delay", 0, "hold every call this long")
	metadata := fs.Bool("metadata", true, "also serve MetadataService (CreateVideo)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ln, err := net.Listen("tcp", net.JoinHostPort(*host, strconv.Itoa(*port)))
	if err != nil {
		return err
	}
	p := ln.Addr().(*net.TCPAddr).Port
	id := registry.InstanceID(*name, p)

	b := testbackend.New()
	b.SetFault(*mode, *delay)
	srv := rpc.NewServer(log, nil)
	if *metadata {
		b.Mount(srv)
	} else {
		b.MountCache(srv)
	}
	registration := registry.Registration{
		Instance: registry.Instance{
			ID: id, Name: *name, Address: *host, Port: p, Tags: registry.DefaultTags,
			Meta: map[string]string{registry.MetaProtoServices: strings.Join(srv.ProtoServices(), ",")},
		},
		HealthURL:     fmt.Sprintf("http://%s/healthz", net.JoinHostPort(*host, strconv.Itoa(p))),
		CheckInterval: time.Second,
	}
	var reg *registry.Consul
	if *consul != "" {
		if reg, err = registry.NewConsul(*consul, log); err != nil {
			return err
		}
		srv.Handle("POST /deregister", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if err := reg.Deregister(r.Context(), id); err != nil {
				http.Error(w, err.Error(), http.StatusBadGateway)
				return
			}
			fmt.Fprintf(w, "{\"deregisteredUnixNano\":%d}\n", time.Now().UnixNano())
		}))
		srv.Handle("POST /register", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if err := reg.Register(ctx, registration); err != nil {
				http.Error(w, err.Error(), http.StatusBadGateway)
			}
		}))
	}
	hs := rpc.NewHTTPServer(srv.Handler(), log)
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	if reg != nil {
		if err := reg.Register(ctx, registration); err != nil {
			_ = hs.Close()
			return err
		}
	}
	log.Warn("ready", "id", id, "addr", ln.Addr().String())
	select {
	case <-ctx.Done():
	case err := <-served:
		return err
	}
	// Like the kernel: leave the registry first, then drain.
	if reg != nil {
		dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := reg.Deregister(dctx, id); err != nil {
			log.Warn("deregister", "err", err)
		}
		cancel()
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
