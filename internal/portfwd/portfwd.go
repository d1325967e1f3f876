// Package portfwd forwards host ports to the ports of guests. bangerd
// listens on each forward's host address: that holds the port, and in
// userspace joins each TCP connection to a new connection to the guest
// (spliced in the kernel on Linux) and relays UDP datagrams per client
// address. A Forwarder given a Kernel also hands each VM's open forwards
// to it (the daemon's: DNAT rules, package network), which then carries
// their connections without a copy through bangerd; the listener stays
// as the port's holder and the path of whatever the kernel does not
// carry. A forward is open as long as its listener.
package portfwd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Rule is one forward: the host's Host (Proto) to the guest's GuestPort.
type Rule struct {
	Proto     string // "tcp" or "udp"
	Host      netip.AddrPort
	GuestPort uint16
}

// String names the host side: "127.0.0.1:8080/tcp".
func (r Rule) String() string { return r.Host.String() + "/" + r.Proto }

// InUseError says a rule's host address and port is taken on the host.
type InUseError struct{ Rule Rule }

func (e *InUseError) Error() string { return e.Rule.String() + " is in use on the host" }

// ListenError is any other reason a rule cannot listen (an address the
// host does not have, a port it may not bind).
type ListenError struct {
	Rule Rule
	Err  error
}

func (e *ListenError) Error() string { return fmt.Sprintf("cannot listen on %s: %v", e.Rule, e.Err) }
func (e *ListenError) Unwrap() error { return e.Err }

// DefaultUDPIdle is how long a UDP flow lives after its last datagram.
const DefaultUDPIdle = 2 * time.Minute

// dialTimeout bounds a connection to the guest; a guest that does not
// answer (still booting, nothing listening) gets the client's connection
// closed.
const dialTimeout = 10 * time.Second

// Forwarder serves the forwards of VMs. It is safe for concurrent use.
type Forwarder struct {
	ctx context.Context // forwards end when it is done
	log *slog.Logger
	// UDPIdle is how long a UDP flow lives without traffic; 0: DefaultUDPIdle.
	UDPIdle time.Duration

	// Kernel, when set, is told each VM's open forwards whenever they
	// change (nil: in userspace only). Set it before the first Open.
	Kernel Kernel

	mu     sync.Mutex                   // guards vms and guests
	vms    map[string]map[Rule]listener // by VM id: what is open for it
	guests map[string]netip.Addr        // by VM id: its guest address
}

// Kernel carries forwards in the kernel. SetForwards makes the forwards
// of VM vmID at guest exactly rules (none: no forward); the Forwarder
// calls it with the VM's open forwards after every change, one call at a
// time. An error leaves those forwards to userspace: it is logged, and
// the forwards still work.
type Kernel interface {
	SetForwards(ctx context.Context, vmID string, guest netip.Addr, rules []Rule) error
}

// listener is one open forward.
type listener interface {
	serve()
	// close stops listening and ends every connection or flow it carries.
	close()
}

// New returns a Forwarder whose forwards end when ctx is done (or they
// are closed), logging to log (nil: silent).
func New(ctx context.Context, log *slog.Logger) *Forwarder {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Forwarder{ctx: ctx, log: log, vms: map[string]map[Rule]listener{}, guests: map[string]netip.Addr{}}
}

// Open listens on the host side of each of rules for the VM vmID whose
// guest address is guest, all or none: when one cannot listen, those
// opened by this call are closed again and the error (an *InUseError or
// *ListenError) names it. Rules already open for vmID are left as they are.
func (f *Forwarder) Open(vmID string, guest netip.Addr, rules []Rule) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	open := f.vms[vmID]
	opened := map[Rule]listener{}
	for _, r := range rules {
		if open[r] != nil || opened[r] != nil {
			continue
		}
		l, err := f.listen(r, netip.AddrPortFrom(guest, r.GuestPort))
		if err != nil {
			for _, l := range opened {
				l.close()
			}
			return err
		}
		opened[r] = l
	}
	if open == nil && len(opened) > 0 {
		open = map[Rule]listener{}
		f.vms[vmID] = open
	}
	for r, l := range opened {
		open[r] = l
		go l.serve()
		f.log.Info("port forward listening", "vm", vmID, "host", r.String(), "guest", netip.AddrPortFrom(guest, r.GuestPort).String())
	}
	if len(opened) > 0 {
		f.guests[vmID] = guest
		f.syncKernelLocked(vmID)
	}
	return nil
}

// syncKernelLocked hands vmID's open forwards to the Kernel; f.mu is held.
func (f *Forwarder) syncKernelLocked(vmID string) {
	if f.Kernel == nil {
		return
	}
	var rules []Rule
	for r := range f.vms[vmID] {
		rules = append(rules, r)
	}
	slices.SortFunc(rules, func(a, b Rule) int { return strings.Compare(a.String(), b.String()) })
	if err := f.Kernel.SetForwards(context.WithoutCancel(f.ctx), vmID, f.guests[vmID], rules); err != nil {
		f.log.Warn("port forwards left to userspace: the kernel did not take them", "vm", vmID, "err", err)
	}
}

// Close stops the forwards rules of vmID (all of them when none is
// given) and ends the connections they carry.
func (f *Forwarder) Close(vmID string, rules ...Rule) {
	f.mu.Lock()
	defer f.mu.Unlock()
	open := f.vms[vmID]
	if len(rules) == 0 {
		for r := range open {
			rules = append(rules, r)
		}
	}
	closed := false
	for _, r := range rules {
		if l := open[r]; l != nil {
			l.close()
			delete(open, r)
			closed = true
			f.log.Info("port forward closed", "vm", vmID, "host", r.String())
		}
	}
	if closed {
		f.syncKernelLocked(vmID)
	}
	if len(open) == 0 {
		delete(f.vms, vmID)
		delete(f.guests, vmID)
	}
}

// CloseAll stops listening on every forward, as the daemon stops. What
// the Kernel carries is left in place: the VMs run on without the daemon,
// and so do their forwards, until the next daemon adopts them.
func (f *Forwarder) CloseAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for id, open := range f.vms {
		for r, l := range open {
			l.close()
			f.log.Info("port forward closed", "vm", id, "host", r.String())
		}
		delete(f.vms, id)
		delete(f.guests, id)
	}
}

// Active reports whether rule r of vmID is open.
func (f *Forwarder) Active(vmID string, r Rule) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.vms[vmID][r] != nil
}

// Check tries to listen on the host side of each of rules and lets go at
// once: the first that cannot is the error (as Open's). It holds nothing,
// so a port may still be taken between Check and Open.
func Check(rules []Rule) error {
	for _, r := range rules {
		var err error
		switch r.Proto {
		case "tcp":
			var ln *net.TCPListener
			if ln, err = net.ListenTCP("tcp", net.TCPAddrFromAddrPort(r.Host)); err == nil {
				ln.Close()
			}
		case "udp":
			var pc *net.UDPConn
			if pc, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(r.Host)); err == nil {
				pc.Close()
			}
		default:
			err = fmt.Errorf("unknown protocol %q", r.Proto)
		}
		if err != nil {
			return listenErr(r, err)
		}
	}
	return nil
}

func (f *Forwarder) listen(r Rule, target netip.AddrPort) (listener, error) {
	switch r.Proto {
	case "tcp":
		ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(r.Host))
		if err != nil {
			return nil, listenErr(r, err)
		}
		return newTCPForward(f.ctx, ln, target, f.log), nil
	case "udp":
		pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(r.Host))
		if err != nil {
			return nil, listenErr(r, err)
		}
		idle := f.UDPIdle
		if idle <= 0 {
			idle = DefaultUDPIdle
		}
		return newUDPForward(f.ctx, pc, target, idle, f.log), nil
	}
	return nil, &ListenError{Rule: r, Err: fmt.Errorf("unknown protocol %q", r.Proto)}
}

func listenErr(r Rule, err error) error {
	if errors.Is(err, syscall.EADDRINUSE) {
		return &InUseError{Rule: r}
	}
	var se *net.OpError
	if errors.As(err, &se) && se.Err != nil {
		err = se.Err
	}
	return &ListenError{Rule: r, Err: err}
}
