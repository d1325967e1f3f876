package network

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestGuestConfigKernelArgs(t *testing.T) {
	tests := []struct {
		name string
		gc   GuestConfig
		want []string
	}{
		{name: "no dns",
			gc: GuestConfig{Address: netip.MustParsePrefix("172.16.0.2/24"), Gateway: netip.MustParseAddr("172.16.0.1")},
			want: []string{"ip=172.16.0.2::172.16.0.1:255.255.255.0::eth0:off",
				"banger.net=addr=172.16.0.2/24,gw=172.16.0.1"}},
		{name: "three resolvers, ip= takes two",
			gc: GuestConfig{Address: netip.MustParsePrefix("10.200.1.9/20"), Gateway: netip.MustParseAddr("10.200.0.1"),
				DNS: []netip.Addr{netip.MustParseAddr("1.1.1.1"), netip.MustParseAddr("9.9.9.9"), netip.MustParseAddr("8.8.8.8")}},
			want: []string{"ip=10.200.1.9::10.200.0.1:255.255.240.0::eth0:off:1.1.1.1:9.9.9.9",
				"banger.net=addr=10.200.1.9/20,gw=10.200.0.1,dns=1.1.1.1,dns=9.9.9.9,dns=8.8.8.8"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.gc.KernelArgs()
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Fatalf("KernelArgs (-want +got):\n%s", diff)
			}
			back, err := ParseBangerNet(got[1])
			if err != nil {
				t.Fatalf("ParseBangerNet(%q): %v", got[1], err)
			}
			if diff := cmp.Diff(tt.gc, back, cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
				cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
				t.Fatalf("round trip (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseBangerNetErrors(t *testing.T) {
	for _, in := range []string{"", "addr=1.2.3.4", "gw=1.2.3.4", "addr=1.2.3.4/24,mtu=1500", "addr=1.2.3.4/24,dns=x", "junk"} {
		t.Run(in, func(t *testing.T) {
			if _, err := ParseBangerNet(in); err == nil {
				t.Fatalf("ParseBangerNet(%q) succeeded", in)
			}
		})
	}
}

func TestParseResolvConf(t *testing.T) {
	in := `# systemd-resolved stub
nameserver 127.0.0.53
nameserver 10.0.0.2
nameserver ::1
nameserver 2001:db8::53
nameserver 0.0.0.0
options edns0 trust-ad
search example.com
nameserver 192.0.2.53 # trailing
nameserver bogus
`
	got, err := ParseResolvConf(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Addr{netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("192.0.2.53")}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Fatalf("ParseResolvConf (-want +got):\n%s", diff)
	}
	got, err = ParseResolvConf(strings.NewReader("nameserver 127.0.0.53\n"))
	if err != nil || len(got) != 0 {
		t.Fatalf("stub-only resolv.conf = %v, %v; want none", got, err)
	}
	// The host's own resolvers keep the loopback stub: the daemon asks it.
	got, err = parseResolvConf(strings.NewReader(in), true)
	want = append([]netip.Addr{netip.MustParseAddr("127.0.0.53")}, want...)
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); err != nil || diff != "" {
		t.Fatalf("host resolvers (-want +got):\n%s%v", diff, err)
	}
}

func TestGuestConfigResolvConf(t *testing.T) {
	gc := GuestConfig{DNS: []netip.Addr{netip.MustParseAddr("1.1.1.1"), netip.MustParseAddr("9.9.9.9")}}
	if got, want := gc.ResolvConf(), "nameserver 1.1.1.1\nnameserver 9.9.9.9\n"; got != want {
		t.Fatalf("ResolvConf = %q, want %q", got, want)
	}
}

func TestHostDNS(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	stub := write("stub", "nameserver 127.0.0.53\n")
	upstream := write("upstream", "nameserver 192.0.2.1\n")
	plain := write("plain", "nameserver 198.51.100.53\n")
	missing := filepath.Join(dir, "missing")
	tests := []struct {
		name  string
		paths []string
		want  []string
	}{
		{name: "plain resolv.conf", paths: []string{plain, upstream}, want: []string{"198.51.100.53"}},
		{name: "systemd-resolved stub falls back to its upstreams", paths: []string{stub, upstream}, want: []string{"192.0.2.1"}},
		{name: "stub only gives nothing", paths: []string{stub, missing}},
		{name: "no files gives nothing", paths: []string{missing, missing}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			old := resolvConfPaths
			resolvConfPaths = tt.paths
			t.Cleanup(func() { resolvConfPaths = old })
			got, err := HostDNS()
			if err != nil {
				t.Fatal(err)
			}
			var gotS []string
			for _, a := range got {
				gotS = append(gotS, a.String())
			}
			if diff := cmp.Diff(tt.want, gotS); diff != "" {
				t.Fatalf("HostDNS (-want +got):\n%s", diff)
			}
		})
	}
}
