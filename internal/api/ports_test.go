package api

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParsePortForward(t *testing.T) {
	for _, tc := range []struct {
		spec string
		want PortForward
	}{
		{"8080:80", PortForward{Proto: "tcp", HostAddr: "127.0.0.1", HostPort: 8080, GuestPort: 80}},
		{"127.0.0.1:18080:8080", PortForward{Proto: "tcp", HostAddr: "127.0.0.1", HostPort: 18080, GuestPort: 8080}},
		{"0.0.0.0:5353:53/udp", PortForward{Proto: "udp", HostAddr: "0.0.0.0", HostPort: 5353, GuestPort: 53}},
		{"8080:80/TCP", PortForward{Proto: "tcp", HostAddr: "127.0.0.1", HostPort: 8080, GuestPort: 80}},
		{"[::1]:8080:80/udp", PortForward{Proto: "udp", HostAddr: "::1", HostPort: 8080, GuestPort: 80}},
		{"[::ffff:10.0.0.1]:1:65535", PortForward{Proto: "tcp", HostAddr: "10.0.0.1", HostPort: 1, GuestPort: 65535}},
		{" 10.1.2.3:65535:1 ", PortForward{Proto: "tcp", HostAddr: "10.1.2.3", HostPort: 65535, GuestPort: 1}},
	} {
		t.Run(tc.spec, func(t *testing.T) {
			got, err := ParsePortForward(tc.spec)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Fatalf("(-want +got)\n%s", d)
			}
			// Its spelled-out form parses back to itself.
			again, err := ParsePortForward(got.String())
			if err != nil || again != got {
				t.Fatalf("%q reparsed as %+v, %v", got.String(), again, err)
			}
		})
	}
}

func TestParsePortForwardRefusesBadSpecs(t *testing.T) {
	for _, tc := range []struct{ spec, why string }{
		{"", "HOST_PORT"},
		{"8080", "no GUEST_PORT"},
		{"127.0.0.1:8080", "no GUEST_PORT"},
		{"0:80", `HOST_PORT "0"`},
		{"65536:80", `HOST_PORT "65536"`},
		{"80:0", `GUEST_PORT "0"`},
		{"80:-1", `GUEST_PORT "-1"`},
		{"http:80", `HOST_PORT "http"`},
		{"8080:80/sctp", `protocol "sctp"`},
		{"8080:80/", `protocol ""`},
		{"localhost:8080:80", `HOST_ADDR "localhost" is not an IP address`},
		{"1.2.3:8080:80", `HOST_ADDR "1.2.3"`},
		{"::1:8080:80", "too many ':'"},
		{"1.2.3.4:1:2:3", "too many ':'"},
		{"[::1]8080:80", "brackets"},
		{"[fe80::1%eth0]:8080:80", "not an IP address"},
		{"[nope]:8080:80", "not an IP address"},
	} {
		t.Run(tc.spec, func(t *testing.T) {
			_, err := ParsePortForward(tc.spec)
			if err == nil {
				t.Fatalf("%q parsed", tc.spec)
			}
			if CodeOf(err) != InvalidArgument {
				t.Errorf("code %s, want invalid_argument", CodeOf(err))
			}
			for _, want := range []string{tc.why, PortSyntax, "127.0.0.1:8080:80/tcp"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
		})
	}
}

func TestParsePortKey(t *testing.T) {
	for _, tc := range []struct {
		spec string
		want PortForward
	}{
		{"8080", PortForward{Proto: "tcp", HostAddr: "127.0.0.1", HostPort: 8080}},
		{"8080/udp", PortForward{Proto: "udp", HostAddr: "127.0.0.1", HostPort: 8080}},
		{"0.0.0.0:8080", PortForward{Proto: "tcp", HostAddr: "0.0.0.0", HostPort: 8080}},
		{"[::1]:8080/udp", PortForward{Proto: "udp", HostAddr: "::1", HostPort: 8080}},
		{"127.0.0.1:8080:80", PortForward{Proto: "tcp", HostAddr: "127.0.0.1", HostPort: 8080, GuestPort: 80}},
		{"8080:80", PortForward{Proto: "tcp", HostAddr: "127.0.0.1", HostPort: 8080, GuestPort: 80}},
	} {
		t.Run(tc.spec, func(t *testing.T) {
			got, err := ParsePortKey(tc.spec)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Fatalf("(-want +got)\n%s", d)
			}
		})
	}
	if _, err := ParsePortKey("x"); err == nil || !strings.Contains(err.Error(), PortSyntax) {
		t.Fatalf("ParsePortKey(x) = %v", err)
	}
}

func TestPortForwardKey(t *testing.T) {
	for p, want := range map[PortForward]string{
		{Proto: "tcp", HostAddr: "127.0.0.1", HostPort: 18080, GuestPort: 8080}: "127.0.0.1:18080/tcp",
		{Proto: "udp", HostAddr: "::1", HostPort: 53, GuestPort: 53}:            "[::1]:53/udp",
	} {
		if got := p.Key(); got != want {
			t.Errorf("Key() = %q, want %q", got, want)
		}
	}
}
