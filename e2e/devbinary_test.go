package e2e_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	monitorv1 "github.com/reelway/reelway/gen/reelway/monitor/v1"
	"github.com/reelway/reelway/gen/reelway/monitor/v1/monitorv1connect"
	"github.com/reelway/reelway/svc/kernel"
)

// TestReelwayDevBinary runs the real `reelway dev` command, as the README's first line does
// (minus hot reload), on shifted ports, and stops it with SIGINT.
func TestReelwayDevBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := reelwayBinary(t)
	dir := t.TempDir()
	offset := freeOffset(t)
	p := startProcess(t, dir, "dev", []string{
		"REELWAY_DATA_DIR=" + filepath.Join(dir, "data"),
		fmt.Sprintf("REELWAY_PORT_OFFSET=%d", offset),
		fmt.Sprintf("REELWAY_NATS_PORT=%d", freePort(t)),
		"REELWAY_SHUTDOWN_TIMEOUT=5s",
	}, bin, "dev")
	gateway := fmt.Sprintf("http://127.0.0.1:%d", 9090+offset)
	monitor := monitorv1connect.NewMonitorServiceClient(http.DefaultClient, gateway)
	waitFor(t, 60*time.Second, "nine passing services through the gateway", func() error {
		res, err := monitor.GetOverview(context.Background(), &monitorv1.GetOverviewRequest{})
		if err != nil {
			return err
		}
		if res.GetServicesPassing() != 9 {
			return fmt.Errorf("%d services passing", res.GetServicesPassing())
		}
		return nil
	})
	p.signal(syscall.SIGINT)
	if err := p.wait(t, 30*time.Second); err != nil {
		t.Fatalf("reelway dev exited with %v after SIGINT, want 0", err)
	}
	b, _ := os.ReadFile(p.log)
	if n := strings.Count(string(b), "msg=deregistered"); n != 9 {
		t.Errorf("%d services deregistered on shutdown, want 9", n)
	}
}

// freeOffset finds a port offset at which all nine default ports are free right now.
func freeOffset(t *testing.T) int {
	t.Helper()
	for range 50 {
		offset := 20000 + rand.IntN(20000)
		free := true
		for _, s := range kernel.Services() {
			ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", kernel.DefaultPort(s)+offset))
			if err != nil {
				free = false
				break
			}
			ln.Close()
		}
		if free {
			return offset
		}
	}
	t.Fatal("no free port offset found")
	return 0
}
