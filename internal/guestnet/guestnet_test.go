package guestnet

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"banger/internal/prereq"
)

func TestHostsWithName(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"empty file", "", "127.0.0.1\tlocalhost\n127.0.1.1\tvm2\n"},
		{"named already", "127.0.0.1 localhost vm2\n", "127.0.0.1 localhost vm2\n"},
		{"old name replaced", "127.0.0.1\tlocalhost\n127.0.1.1\tvm1\n::1 localhost\n",
			"127.0.0.1\tlocalhost\n127.0.1.1\tvm2\n::1 localhost\n"},
		{"appended", "127.0.0.1 localhost", "127.0.0.1 localhost\n127.0.1.1\tvm2\n"},
		{"a comment does not count", "127.0.0.1 localhost # vm2\n", "127.0.0.1 localhost # vm2\n127.0.1.1\tvm2\n"},
		{"nor an address", "vm2 localhost\n", "vm2 localhost\n127.0.1.1\tvm2\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(HostsWithName([]byte(tt.in), "vm2")); got != tt.want {
				t.Errorf("HostsWithName(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestWriteFiles(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	// A dangling symlink to systemd-resolved's stub becomes a file.
	if err := os.Symlink("/run/systemd/resolve/stub-resolv.conf", filepath.Join(root, "etc/resolv.conf")); err != nil {
		t.Fatal(err)
	}
	dns := []netip.Addr{netip.MustParseAddr("10.0.0.53"), netip.MustParseAddr("9.9.9.9")}
	if err := WriteResolvConf(root, dns); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "etc/hosts"), []byte("127.0.0.1 localhost\n127.0.1.1 old\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteHostname(root, "new"); err != nil {
		t.Fatal(err)
	}
	for file, want := range map[string]string{
		"etc/resolv.conf": "nameserver 10.0.0.53\nnameserver 9.9.9.9\n",
		"etc/hostname":    "new\n",
		"etc/hosts":       "127.0.0.1 localhost\n127.0.1.1\tnew\n",
	} {
		b, err := os.ReadFile(filepath.Join(root, file))
		if err != nil || string(b) != want {
			t.Errorf("%s = %q, %v; want %q", file, b, err, want)
		}
	}
	if st, err := os.Lstat(filepath.Join(root, "etc/resolv.conf")); err != nil || !st.Mode().IsRegular() {
		t.Errorf("resolv.conf is not a regular file: %v %v", st, err)
	}
}

// inNewNetns runs fn on a thread of its own in a network namespace made
// for it, which goes away with the thread: nothing on the host is touched.
func inNewNetns(t *testing.T, fn func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		prereq.Missing(t, "a network namespace needs root")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			t.Errorf("unshare: %v", err)
			return
		}
		fn()
	}()
	<-done
}

// veth makes a veth pair named eth0 and peer, both up, eth0 with an
// address and a default route: a NIC that had an identity.
func veth(t *testing.T) netlink.Link {
	t.Helper()
	la := netlink.NewLinkAttrs()
	la.Name = "eth0"
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "peer"}); err != nil {
		t.Fatalf("adding a veth pair: %v", err)
	}
	peer, _ := netlink.LinkByName("peer")
	nic, err := netlink.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(peer); err != nil {
		t.Fatal(err)
	}
	if err := Apply(nic, Config{Addr: netip.MustParsePrefix("10.77.0.5/24"), GW: netip.MustParseAddr("10.77.0.1")}); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	// A second address, as a guest may have added.
	if err := netlink.AddrAdd(nic, addr(netip.MustParsePrefix("10.78.0.9/16"))); err != nil {
		t.Fatal(err)
	}
	return nic
}

func TestReplace(t *testing.T) {
	inNewNetns(t, func() {
		nic := veth(t)
		mac, _ := net.ParseMAC("02:42:ac:10:00:07")
		c := Config{Addr: netip.MustParsePrefix("10.77.0.7/24"), GW: netip.MustParseAddr("10.77.0.254"), MAC: mac}
		if err := Replace(nic, c); err != nil {
			t.Errorf("Replace: %v", err)
			return
		}
		nic, _ = netlink.LinkByName("eth0")
		if got := nic.Attrs().HardwareAddr.String(); got != mac.String() {
			t.Errorf("MAC = %s, want %s", got, mac)
		}
		if nic.Attrs().Flags&net.FlagUp == 0 {
			t.Error("eth0 is down")
		}
		addrs, _ := netlink.AddrList(nic, netlink.FAMILY_V4)
		if len(addrs) != 1 || addrs[0].IPNet.String() != "10.77.0.7/24" {
			t.Errorf("addresses = %v, want only 10.77.0.7/24", addrs)
		}
		routes, _ := netlink.RouteList(nic, netlink.FAMILY_V4)
		var gws []string
		for _, r := range routes {
			if r.Dst == nil || r.Dst.IP.IsUnspecified() {
				gws = append(gws, r.Gw.String())
			}
		}
		if len(gws) != 1 || gws[0] != "10.77.0.254" {
			t.Errorf("default routes via %v, want 10.77.0.254 alone", gws)
		}
		// A MAC the kernel refuses (multicast) fails naming the step.
		bad, _ := net.ParseMAC("01:00:5e:00:00:01")
		if err := Replace(nic, Config{Addr: c.Addr, MAC: bad}); err == nil || !strings.Contains(err.Error(), "setting the MAC of eth0") {
			t.Errorf("a multicast MAC: %v, want the MAC step's error", err)
		}
	})
}
