package events_test

import (
	"errors"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/reelway/reelway/svc/events"
)

// TestStartServerSaysWhyItCannotListen checks that a taken port is reported as such at once,
// not as a server that never became ready, and that the same port serves once it is free.
func TestStartServerSaysWhyItCannotListen(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	addr := "127.0.0.1:" + strconv.Itoa(port)
	cases := []struct {
		name    string
		release bool
		wantErr string
	}{
		{"taken", false, "listen " + addr + ": address already in use"},
		{"free", true, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.release {
				ln.Close()
			}
			ns, err := events.StartServer("127.0.0.1", port, t.TempDir())
			if c.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				defer ns.Shutdown()
				if !strings.HasSuffix(ns.URL(), ":"+strconv.Itoa(port)) {
					t.Fatalf("url %s, want port %d", ns.URL(), port)
				}
				return
			}
			if err == nil {
				ns.Shutdown()
				t.Fatal("started on a taken port")
			}
			if !strings.Contains(err.Error(), c.wantErr) || !errors.Is(err, syscall.EADDRINUSE) || !errors.Is(err, events.ErrConnect) {
				t.Fatalf("error %q, want %q (EADDRINUSE, ErrConnect)", err, c.wantErr)
			}
		})
	}
}
