package network

import (
	"crypto/rand"
	"encoding/hex"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"banger/internal/prereq"
	"github.com/vishvananda/netns"
)

// testNS is a network namespace made by a test with `ip netns add` and
// deleted in t.Cleanup, with everything in it.
type testNS struct {
	name string
	h    netns.NsHandle
}

// requireNetns skips unless the test can create network namespaces.
func requireNetns(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		prereq.Missing(t, "needs root to create network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		prereq.Missing(t, "needs iproute2's ip to create network namespaces")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		prereq.Missing(t, "needs /dev/net/tun")
	}
}

// newNS creates a fresh namespace with loopback up.
func newNS(t *testing.T, role string) *testNS {
	t.Helper()
	var b [3]byte
	_, _ = rand.Read(b[:])
	name := "bgt-" + role + "-" + hex.EncodeToString(b[:])
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("deleting netns %s: %v: %s", name, err, out)
		}
	})
	h, err := netns.GetFromName(name)
	if err != nil {
		t.Fatalf("opening netns %s: %v", name, err)
	}
	t.Cleanup(func() { h.Close() })
	ns := &testNS{name: name, h: h}
	ns.ip(t, "link", "set", "lo", "up")
	return ns
}

// ip runs `ip -n <ns> args...`.
func (ns *testNS) ip(t *testing.T, args ...string) string {
	t.Helper()
	return run(t, append([]string{"ip", "-n", ns.name}, args...)...)
}

// exec runs a command inside the namespace.
func (ns *testNS) exec(t *testing.T, args ...string) string {
	t.Helper()
	return run(t, append([]string{"ip", "netns", "exec", ns.name}, args...)...)
}

// do runs fn on a new goroutine locked to an OS thread that has entered
// the namespace. The goroutine never unlocks, so the Go runtime discards
// that thread afterwards and no other goroutine ever runs inside ns.
// Sockets opened by fn stay in ns wherever they are used later.
func (ns *testNS) do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := netns.Set(ns.h); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// must is do, failing the test on error.
func (ns *testNS) must(t *testing.T, what string, fn func() error) {
	t.Helper()
	if err := ns.do(fn); err != nil {
		t.Fatalf("%s in %s: %v", what, ns.name, err)
	}
}

func run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// testManager returns a Manager for 172.16.0.0/24 (only ever used inside
// test namespaces).
func testManager(t *testing.T, mod func(*Config)) *Manager {
	t.Helper()
	cfg := Config{
		BridgeName: "banger0",
		BridgeIP:   netip.MustParseAddr("172.16.0.1"),
		CIDR:       netip.MustParsePrefix("172.16.0.0/24"),
		PoolSize:   2,
	}
	if mod != nil {
		mod(&cfg)
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return m
}

// hostForwarding reads the host's ip_forward from this (unlocked, host
// namespace) goroutine.
func hostForwarding(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	if err != nil {
		t.Fatalf("reading host ip_forward: %v", err)
	}
	return strings.TrimSpace(string(b))
}

func mustPrefix(t *testing.T, s string) netip.Prefix {
	t.Helper()
	p, err := netip.ParsePrefix(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func mustAddr(t *testing.T, s string) netip.Addr {
	t.Helper()
	a, err := netip.ParseAddr(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
