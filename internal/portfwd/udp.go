package portfwd

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// udpForward relays datagrams: each client address gets a flow, a socket
// of its own connected to the guest, so the guest's answers go back to
// the client they answer. A flow ends after idle without traffic.
type udpForward struct {
	pc     *net.UDPConn
	target netip.AddrPort
	idle   time.Duration
	log    *slog.Logger

	mu     sync.Mutex // guards flows and closed
	flows  map[netip.AddrPort]*udpFlow
	closed bool
}

type udpFlow struct {
	conn *net.UDPConn
	last atomic.Int64 // unix nanoseconds of the last datagram either way
}

func newUDPForward(ctx context.Context, pc *net.UDPConn, target netip.AddrPort, idle time.Duration, log *slog.Logger) *udpForward {
	u := &udpForward{pc: pc, target: target, idle: idle, log: log, flows: map[netip.AddrPort]*udpFlow{}}
	context.AfterFunc(ctx, u.close)
	return u
}

func (u *udpForward) serve() {
	buf := make([]byte, 64<<10)
	for {
		n, from, err := u.pc.ReadFromUDPAddrPort(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			continue
		}
		fl := u.flow(from)
		if fl == nil {
			continue
		}
		fl.last.Store(time.Now().UnixNano())
		// A guest port with nothing on it answers with ICMP; the next
		// write then reports it. Either way the datagram is gone, as it
		// would be on the wire.
		fl.conn.Write(buf[:n])
	}
}

// flow returns the flow of client from, making it (and its reply loop)
// when it has none; nil when the forward is closed or the guest cannot
// be dialled.
func (u *udpForward) flow(from netip.AddrPort) *udpFlow {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return nil
	}
	if fl := u.flows[from]; fl != nil {
		return fl
	}
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(u.target))
	if err != nil {
		u.log.Debug("port forward udp dial", "guest", u.target.String(), "err", err)
		return nil
	}
	fl := &udpFlow{conn: c}
	fl.last.Store(time.Now().UnixNano())
	u.flows[from] = fl
	go u.replies(from, fl)
	return fl
}

// replies sends what the guest answers on fl back to the client, until
// the flow is idle or closed.
func (u *udpForward) replies(client netip.AddrPort, fl *udpFlow) {
	defer u.drop(client, fl)
	buf := make([]byte, 64<<10)
	for {
		fl.conn.SetReadDeadline(time.Unix(0, fl.last.Load()).Add(u.idle))
		n, err := fl.conn.Read(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			if time.Since(time.Unix(0, fl.last.Load())) >= u.idle {
				return
			}
			continue
		}
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			// ECONNREFUSED: the guest's port is closed; keep the flow.
			continue
		}
		fl.last.Store(time.Now().UnixNano())
		u.pc.WriteToUDPAddrPort(buf[:n], client)
	}
}

func (u *udpForward) drop(client netip.AddrPort, fl *udpFlow) {
	fl.conn.Close()
	u.mu.Lock()
	if u.flows[client] == fl {
		delete(u.flows, client)
	}
	u.mu.Unlock()
}

// flowCount is the number of live flows (tests).
func (u *udpForward) flowCount() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.flows)
}

func (u *udpForward) close() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return
	}
	u.closed = true
	u.pc.Close()
	for _, fl := range u.flows {
		fl.conn.Close()
	}
}
