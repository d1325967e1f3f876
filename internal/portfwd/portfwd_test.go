package portfwd

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var loopback = netip.MustParseAddr("127.0.0.1")

// freePort is a TCP and UDP port nothing on 127.0.0.1 has now.
func freePort(t *testing.T) uint16 {
	t.Helper()
	for range 20 {
		ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		port := uint16(ln.Addr().(*net.TCPAddr).Port)
		ln.Close()
		if pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(port)}); err == nil {
			pc.Close()
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

// answerServer stands in for the guest: it reads a connection to its end,
// then writes back how many bytes came and their sha256, and closes. A
// client only gets the answer if its half close went through.
func answerServer(t *testing.T) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				h := sha256.New()
				n, _ := io.Copy(h, c)
				fmt.Fprintf(c, "%d %x", n, h.Sum(nil))
			}()
		}
	}()
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

func newForwarder(t *testing.T) *Forwarder {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f := New(ctx, nil)
	t.Cleanup(func() { f.CloseAll(); cancel() })
	return f
}

func tcpRule(host, guest uint16) Rule {
	return Rule{Proto: "tcp", Host: netip.AddrPortFrom(loopback, host), GuestPort: guest}
}

// send writes data through addr, half-closes and returns the answer.
func send(t *testing.T, addr string, data []byte) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	go func() {
		c.Write(data)
		c.(*net.TCPConn).CloseWrite()
	}()
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading the answer through %s: %v", addr, err)
	}
	return string(b)
}

func TestTCPForwardCarriesDataBothWaysWithHalfClose(t *testing.T) {
	f := newForwarder(t)
	guest := answerServer(t)
	r := tcpRule(freePort(t), guest)
	if err := f.Open("vm1", loopback, []Rule{r}); err != nil {
		t.Fatal(err)
	}
	if !f.Active("vm1", r) {
		t.Fatal("an open rule is not active")
	}
	data := make([]byte, 32<<20+7)
	rand.Read(data)
	want := fmt.Sprintf("%d %x", len(data), sha256.Sum256(data))
	// Several at once, each with its own guest connection.
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			c, err := net.Dial("tcp", r.Host.String())
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			go func() { c.Write(data); c.(*net.TCPConn).CloseWrite() }()
			b, err := io.ReadAll(c)
			if err == nil && string(b) != want {
				err = fmt.Errorf("answer %q, want %q", b, want)
			}
			errs <- err
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if got := send(t, r.Host.String(), nil); got != "0 "+fmt.Sprintf("%x", sha256.Sum256(nil)) {
		t.Fatalf("empty send: %q", got)
	}
}

func TestOpenIsAllOrNothingAndNamesThePortInUse(t *testing.T) {
	f := newForwarder(t)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	takenPort := uint16(taken.Addr().(*net.TCPAddr).Port)
	free := tcpRule(freePort(t), 80)
	err = f.Open("vm1", loopback, []Rule{free, tcpRule(takenPort, 80)})
	var inUse *InUseError
	if !errors.As(err, &inUse) {
		t.Fatalf("Open over a taken port: %v, want *InUseError", err)
	}
	if want := fmt.Sprintf("127.0.0.1:%d/tcp is in use on the host", takenPort); err.Error() != want {
		t.Fatalf("error %q, want %q", err, want)
	}
	if f.Active("vm1", free) {
		t.Fatal("the free rule stayed open after Open failed")
	}
	if _, err := net.Dial("tcp", free.Host.String()); err == nil {
		t.Fatal("something still listens on the free rule's port")
	}
	if err := Check([]Rule{free}); err != nil {
		t.Fatalf("Check of a free port: %v", err)
	}
	if err := Check([]Rule{free, tcpRule(takenPort, 1)}); !errors.As(err, &inUse) {
		t.Fatalf("Check of a taken port: %v", err)
	}
	// Check let go of the free one.
	if err := f.Open("vm1", loopback, []Rule{free}); err != nil {
		t.Fatalf("Open after Check: %v", err)
	}
	// An address the host does not have is another error, naming it.
	bad := Rule{Proto: "tcp", Host: netip.MustParseAddrPort("192.0.2.1:8080"), GuestPort: 80}
	var le *ListenError
	if err := Check([]Rule{bad}); !errors.As(err, &le) || !strings.Contains(err.Error(), "192.0.2.1:8080/tcp") {
		t.Fatalf("Check of an address not on this host: %v", err)
	}
}

func TestCloseEndsListenerAndConnections(t *testing.T) {
	f := newForwarder(t)
	// The guest holds the connection open without answering.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	r := tcpRule(freePort(t), uint16(ln.Addr().(*net.TCPAddr).Port))
	other := tcpRule(freePort(t), 1)
	if err := f.Open("vm1", loopback, []Rule{r, other}); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", r.Host.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	g := <-accepted
	defer g.Close()
	f.Close("vm1", r)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, errTimeout()) {
		t.Fatalf("client read after Close: %v, want the connection ended", err)
	}
	if _, err := net.Dial("tcp", r.Host.String()); err == nil {
		t.Fatal("the closed rule still accepts")
	}
	if !f.Active("vm1", other) {
		t.Fatal("closing one rule closed another")
	}
	f.Close("vm1")
	if f.Active("vm1", other) {
		t.Fatal("Close with no rules left one open")
	}
}

func errTimeout() error { return errTimeoutT{} }

type errTimeoutT struct{}

func (errTimeoutT) Error() string { return "timeout" }
func (errTimeoutT) Is(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestGuestPortClosedResetsTheClient(t *testing.T) {
	f := newForwarder(t)
	// A port just closed: nothing listens there.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := uint16(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	r := tcpRule(freePort(t), closed)
	if r.Host.Port() == closed {
		t.Skip("the free port picked is the closed one")
	}
	if err := f.Open("vm1", loopback, []Rule{r}); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", r.Host.String())
	if err != nil {
		// On loopback the reset can beat connect's return.
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatal(err)
		}
		return
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = c.Read(make([]byte, 1))
	if err == nil || errors.Is(err, errTimeout()) {
		t.Fatalf("read through a forward to a closed guest port: %v, want the connection ended", err)
	}
}

func TestContextEndsForwards(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	f := New(ctx, nil)
	r := tcpRule(freePort(t), answerServer(t))
	if err := f.Open("vm1", loopback, []Rule{r}); err != nil {
		t.Fatal(err)
	}
	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for Check([]Rule{r}) != nil {
		if time.Now().After(deadline) {
			t.Fatal("the forward still listens after its context ended")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// udpEcho stands in for a guest's UDP service: it answers each datagram
// with "echo:" and the datagram.
func udpEcho(t *testing.T) uint16 {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			pc.WriteToUDPAddrPort(append([]byte("echo:"), buf[:n]...), from)
		}
	}()
	return uint16(pc.LocalAddr().(*net.UDPAddr).Port)
}

func TestUDPForwardKeepsFlowsApartAndDropsIdleOnes(t *testing.T) {
	f := newForwarder(t)
	f.UDPIdle = 300 * time.Millisecond
	r := Rule{Proto: "udp", Host: netip.AddrPortFrom(loopback, freePort(t)), GuestPort: udpEcho(t)}
	if err := f.Open("vm1", loopback, []Rule{r}); err != nil {
		t.Fatal(err)
	}
	var clients []*net.UDPConn
	for i := range 3 {
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(r.Host))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients = append(clients, c)
		msg := fmt.Sprintf("client %d", i)
		c.Write([]byte(msg))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 1500)
		n, err := c.Read(buf)
		if err != nil || string(buf[:n]) != "echo:"+msg {
			t.Fatalf("client %d got %q, %v", i, buf[:n], err)
		}
	}
	u := f.vms["vm1"][r].(*udpForward)
	if n := u.flowCount(); n != 3 {
		t.Fatalf("%d flows for 3 clients", n)
	}
	// A big datagram passes whole.
	big := bytes.Repeat([]byte("x"), 60000)
	clients[0].Write(big)
	buf := make([]byte, 64<<10)
	n, err := clients[0].Read(buf)
	if err != nil || n != len(big)+5 {
		t.Fatalf("big datagram came back as %d bytes, %v", n, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for u.flowCount() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d flows left after the idle timeout", u.flowCount())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// A client coming back after its flow ended gets a new one.
	clients[1].Write([]byte("again"))
	clients[1].SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err = clients[1].Read(buf)
	if err != nil || string(buf[:n]) != "echo:again" {
		t.Fatalf("after the idle timeout: %q, %v", buf[:n], err)
	}
	f.Close("vm1")
	if err := Check([]Rule{r}); err != nil {
		t.Fatalf("the udp port is still held after Close: %v", err)
	}
}

// kernelLog is a Kernel that records what it is told.
type kernelLog struct {
	mu    sync.Mutex
	calls []string
	fail  bool
}

func (k *kernelLog) SetForwards(_ context.Context, vmID string, guest netip.Addr, rules []Rule) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	var rs []string
	for _, r := range rules {
		rs = append(rs, fmt.Sprintf("%s->%d", r, r.GuestPort))
	}
	k.calls = append(k.calls, fmt.Sprintf("%s %s [%s]", vmID, guest, strings.Join(rs, " ")))
	if k.fail {
		return errors.New("no nftables here")
	}
	return nil
}

// The Kernel hears each VM's whole set of open forwards after every
// change, and not at CloseAll (the kernel's forwards outlive the daemon);
// a Kernel that fails leaves the forward working in userspace.
func TestKernelHearsEveryChange(t *testing.T) {
	k := &kernelLog{}
	f := newForwarder(t)
	f.Kernel = k
	guest := netip.MustParseAddr("127.0.0.1")
	g := answerServer(t)
	h1, h2 := freePort(t), freePort(t)
	if err := f.Open("vm1", guest, []Rule{tcpRule(h1, g), tcpRule(h2, g)}); err != nil {
		t.Fatal(err)
	}
	f.Close("vm1", tcpRule(h1, g))
	f.Close("vm1", tcpRule(h1, g)) // already closed: nothing to tell
	f.Close("vm1")
	k.fail = true
	if err := f.Open("vm2", guest, []Rule{tcpRule(h1, g)}); err != nil {
		t.Fatalf("a failing kernel fails the open: %v", err)
	}
	if got := send(t, fmt.Sprintf("127.0.0.1:%d", h1), []byte("hi")); got == "" {
		t.Fatal("the userspace forward does not answer when the kernel failed")
	}
	f.CloseAll()
	r1, r2 := tcpRule(h1, g), tcpRule(h2, g)
	first, second := r1.String()+fmt.Sprintf("->%d", g), r2.String()+fmt.Sprintf("->%d", g)
	both := []string{first, second}
	slices.Sort(both)
	want := []string{
		"vm1 127.0.0.1 [" + strings.Join(both, " ") + "]",
		"vm1 127.0.0.1 [" + second + "]",
		"vm1 127.0.0.1 []",
		"vm2 127.0.0.1 [" + first + "]",
	}
	if !slices.Equal(k.calls, want) {
		t.Fatalf("kernel calls:\n%s\nwant:\n%s", strings.Join(k.calls, "\n"), strings.Join(want, "\n"))
	}
}
