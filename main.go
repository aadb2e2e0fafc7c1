// Command reelway runs the Reelway video platform: all nine services in one process
// (`reelway dev`), one service per process (`reelway serve <service>`), or the NATS server
// the separate processes share (`reelway nats`).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/reelway/reelway/svc/events"
	"github.com/reelway/reelway/svc/kernel"
	"github.com/reelway/reelway/svc/platform"
)

const usage = `usage:
  reelway dev [flags]              run all nine services in one process
  reelway serve <service> [flags]  run one service (gateway, upload, transcoder, streaming,
                                   metadata, cache, auth, worker, monitor)
  reelway gateway [flags]          same as: reelway serve gateway
  reelway nats [flags]             run a NATS server with JetStream for separate processes
  reelway version

Flags and REELWAY_* environment variables: run a command with -h.
`

// errUsage marks command-line mistakes (exit code 2).
var errUsage = errors.New("usage")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stderr)
	stop()
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errUsage), errors.Is(err, kernel.ErrConfig), errors.Is(err, platform.ErrUnknownService):
		fmt.Fprintln(os.Stderr, "reelway:", err)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "reelway:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("%w: no command", errUsage)
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "dev":
		cfg, err := kernel.LoadConfig("dev", args, getenv)
		if err != nil {
			return err
		}
		log := kernel.NewLogger(cfg)
		log.Info("startup", "config", cfg)
		return platform.Dev(ctx, cfg, log, nil)
	case "serve", "gateway":
		service := "gateway"
		if cmd == "serve" {
			if len(args) == 0 || args[0] == "-h" || args[0] == "-help" || args[0] == "--help" {
				fmt.Fprint(stderr, usage)
				if len(args) == 0 {
					return fmt.Errorf("%w: serve needs a service name", errUsage)
				}
				return flag.ErrHelp
			}
			if strings.HasPrefix(args[0], "-") {
				return fmt.Errorf("%w: the service name comes first: reelway serve <service> [flags]", errUsage)
			}
			service, args = args[0], args[1:]
		}
		cfg, err := kernel.LoadConfig(service, args, getenv)
		if err != nil {
			return err
		}
		log := kernel.NewLogger(cfg)
		log.Info("startup", "config", cfg)
		return platform.Serve(ctx, cfg, log)
	case "nats":
		cfg, err := kernel.LoadConfig("nats", args, getenv)
		if err != nil {
			return err
		}
		log := kernel.NewLogger(cfg)
		ns, err := events.StartServer(cfg.Host, cfg.NATSPort, cfg.DataDir)
		if err != nil {
			return err
		}
		log.Info("nats.ready", "url", ns.URL(), "data_dir", cfg.DataDir)
		<-ctx.Done()
		ns.Shutdown()
		return nil
	case "version":
		fmt.Fprintln(os.Stdout, "reelway", getenvOr(getenv, "REELWAY_VERSION", "dev"))
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stderr, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("%w: unknown command %q", errUsage, cmd)
}

func getenvOr(getenv func(string) string, name, def string) string {
	if v := getenv(name); v != "" {
		return v
	}
	return def
}
