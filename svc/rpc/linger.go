package rpc

import (
	"io"
	"net"
	"sync"
	"time"
)

// Lingering close bounds. A closing connection reads and drops what the peer still sends
// for at most lingerTimeout and lingerBytes before it is closed for good.
const (
	lingerTimeout = 2 * time.Second
	lingerBytes   = 64 << 20
)

// LingerListener returns ln with a lingering close on every TCP connection it accepts.
//
// A server that answers before it has read the whole request body (the upload service's
// 413 for a body longer than the upload, in the middle of that body) and then closes the
// connection makes the kernel reset it, because bytes are still arriving: the reset can
// reach the peer before it has read the answer, which it then never sees. The gateway,
// still sending the body, would report the backend unavailable instead of relaying the
// 413. So Close first sends FIN after the answer, drops what the peer still sends until
// it stops (it has the answer and closes its end) or a bound is reached, and only then
// closes the socket. net/http's own wait before closing (half a second, and only in some
// cases) is not enough for a proxy that is still streaming the body.
//
// The wrapped connection still is a *net.TCPConn underneath, and its ReadFrom (sendfile)
// and CloseWrite stay visible to net/http.
func LingerListener(ln net.Listener) net.Listener { return lingerListener{ln} }

type lingerListener struct{ net.Listener }

func (l lingerListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		return &lingerConn{TCPConn: tc}, nil
	}
	return c, nil
}

// lingerConn is a TCP connection whose Close lingers (see LingerListener).
type lingerConn struct {
	*net.TCPConn
	once sync.Once
}

// Close returns at once; the socket is closed in the background once the peer has
// stopped sending or the bounds are reached.
func (c *lingerConn) Close() error {
	c.once.Do(func() {
		if err := c.TCPConn.CloseWrite(); err != nil {
			_ = c.TCPConn.Close()
			return
		}
		go func() {
			_ = c.TCPConn.SetReadDeadline(time.Now().Add(lingerTimeout))
			_, _ = io.CopyN(io.Discard, c.TCPConn, lingerBytes)
			_ = c.TCPConn.Close()
		}()
	})
	return nil
}
