package portfwd

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
)

// tcpForward accepts on the host and joins each connection to a new one
// to the guest.
type tcpForward struct {
	ln     *net.TCPListener
	target netip.AddrPort
	log    *slog.Logger
	ctx    context.Context // canceled by close: ends dials in flight
	cancel context.CancelFunc

	mu     sync.Mutex // guards conns and closed
	conns  map[*net.TCPConn]struct{}
	closed bool
}

func newTCPForward(ctx context.Context, ln *net.TCPListener, target netip.AddrPort, log *slog.Logger) *tcpForward {
	ctx, cancel := context.WithCancel(ctx)
	t := &tcpForward{ln: ln, target: target, log: log, ctx: ctx, cancel: cancel, conns: map[*net.TCPConn]struct{}{}}
	context.AfterFunc(ctx, t.close)
	return t
}

func (t *tcpForward) serve() {
	for {
		c, err := t.ln.AcceptTCP()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			// Out of file descriptors and the like: wait, don't spin.
			t.log.Warn("port forward accept", "host", t.ln.Addr().String(), "err", err)
			select {
			case <-t.ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		go t.handle(c)
	}
}

// handle dials the guest for the client c and splices the two.
func (t *tcpForward) handle(c *net.TCPConn) {
	if !t.track(c) {
		return
	}
	defer t.untrack(c)
	ctx, cancel := context.WithTimeout(t.ctx, dialTimeout)
	var d net.Dialer
	g, err := d.DialContext(ctx, "tcp", t.target.String())
	cancel()
	if err != nil {
		// The client sees a reset, as it would from a closed port.
		t.log.Debug("port forward dial", "guest", t.target.String(), "err", err)
		c.SetLinger(0)
		return
	}
	gc := g.(*net.TCPConn)
	if !t.track(gc) {
		return
	}
	defer t.untrack(gc)
	Splice(c, gc)
}

// Splice copies a to b and b to a until both directions end. An end of
// stream on one side is passed on as a half close (FIN) to the other, so
// a client that shuts its writing down still gets the answer; an error
// on either ends both connections. With two *net.TCPConn the copies are
// splice(2)s on Linux: the data does not pass through user space.
func Splice(a, b *net.TCPConn) {
	var wg sync.WaitGroup
	half := func(dst, src *net.TCPConn) {
		defer wg.Done()
		if _, err := io.Copy(dst, src); err != nil {
			a.Close()
			b.Close()
			return
		}
		dst.CloseWrite()
		src.CloseRead()
	}
	wg.Add(2)
	go half(a, b)
	go half(b, a)
	wg.Wait()
	a.Close()
	b.Close()
}

// track adds c to the connections close ends; false (c closed) once
// the forward is closed.
func (t *tcpForward) track(c *net.TCPConn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		c.Close()
		return false
	}
	t.conns[c] = struct{}{}
	return true
}

func (t *tcpForward) untrack(c *net.TCPConn) {
	c.Close()
	t.mu.Lock()
	delete(t.conns, c)
	t.mu.Unlock()
}

func (t *tcpForward) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	t.closed = true
	t.cancel()
	t.ln.Close()
	for c := range t.conns {
		c.Close()
	}
}
