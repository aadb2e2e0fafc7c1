package events

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Server is an embedded NATS server with JetStream, for `reelway dev` and for running the
// platform's own NATS process.
type Server struct {
	ns *server.Server
}

// StartServer starts a NATS server with JetStream stored under dataDir. Port 0 (or -1)
// picks a free port; a given port that is taken is reported as such at once.
func StartServer(host string, port int, dataDir string) (*Server, error) {
	if port == 0 {
		port = server.RANDOM_PORT
	} else if port > 0 {
		if err := checkListen(host, port); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrConnect, err)
		}
	}
	opts := &server.Options{
		ServerName: "reelway",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   filepath.Join(dataDir, "jetstream"),
		NoSigs:     true,
		NoLog:      true,
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("%w: new nats server: %w", ErrConnect, err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("%w: nats server not ready", ErrConnect)
	}
	return &Server{ns: ns}, nil
}

// checkListen tries the server's address first: a server that cannot listen only logs why
// (and the embedded one logs nothing), then never becomes ready, so a taken port would
// otherwise surface as a bare "not ready" after the whole wait.
func checkListen(host string, port int) error {
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		var sys *os.SyscallError
		if errors.As(err, &sys) {
			err = sys.Err // "address already in use", without the "bind: " wording
		}
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	return ln.Close()
}

// URL is the client URL of the server.
func (s *Server) URL() string { return s.ns.ClientURL() }

// Shutdown stops the server and waits for it.
func (s *Server) Shutdown() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
}
