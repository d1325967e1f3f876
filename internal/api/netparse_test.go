package api

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseNet(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want NetPolicy
	}{
		{"", NetPolicy{Mode: NetNAT}},
		{"nat", NetPolicy{Mode: NetNAT}},
		{" none ", NetPolicy{Mode: NetNone}},
		{"allow=github.com", NetPolicy{Mode: NetAllow, Allow: []string{"github.com"}}},
		{"allow=GitHub.com.,192.0.2.7:22,10.1.2.3/8:443,github.com",
			NetPolicy{Mode: NetAllow, Allow: []string{"github.com", "192.0.2.7:22", "10.0.0.0/8:443"}}},
		{"allow=198.51.100.10/32", NetPolicy{Mode: NetAllow, Allow: []string{"198.51.100.10"}}},
		{"allow=_srv.example.com:53", NetPolicy{Mode: NetAllow, Allow: []string{"_srv.example.com:53"}}},
	} {
		got, err := ParseNet(tc.in)
		if err != nil {
			t.Errorf("ParseNet(%q): %v", tc.in, err)
			continue
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("ParseNet(%q) (-want +got):\n%s", tc.in, diff)
		}
	}
}

func TestParseNetErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"bogus", "unknown policy"},
		{"nat=1", "unknown policy"},
		{"none=x", "unknown policy"},
		{"allow", "at least one destination"},
		{"allow=", "at least one destination"},
		{"allow=a.test,", "empty destination"},
		{"allow=a.test:0", "port \"0\" must be a number from 1 to 65535"},
		{"allow=a.test:http", "must be a number"},
		{"allow=a.test:70000", "must be a number"},
		{"allow=10.0.0.0/33", "not an IPv4 CIDR"},
		{"allow=2001:db8::1", "IPv6 is not supported"},
		{"allow=[2001:db8::1]:80", "IPv6 is not supported"},
		{"allow=::ffff:1.2.3.4", "IPv6 is not supported"},
		{"allow=192.0.2.300", "neither an IPv4 address nor a host name"},
		{"allow=-a.test", "not a host name"},
		{"allow=a..test", "not a host name"},
		{"allow=a test", "is not allowed"},
		{"allow=" + strings.Repeat("a", 64) + ".test", "not a host name"},
	} {
		_, err := ParseNet(tc.in)
		if err == nil {
			t.Errorf("ParseNet(%q) = nil error, want one containing %q", tc.in, tc.want)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseNet(%q) = %v, want it to contain %q", tc.in, err, tc.want)
		}
		if strings.Contains(tc.in, "allow=") && !strings.HasSuffix(err.Error(), NetForms) {
			t.Errorf("ParseNet(%q) = %v, want it to end with the accepted forms", tc.in, err)
		}
	}
	var many []string
	for i := range MaxAllow + 1 {
		many = append(many, fmt.Sprintf("10.0.%d.0/24", i))
	}
	if _, err := ParseNet("allow=" + strings.Join(many, ",")); err == nil || !strings.Contains(err.Error(), "at most") {
		t.Errorf("ParseNet of %d destinations = %v, want too many", len(many), err)
	}
}

func TestNetPolicyString(t *testing.T) {
	for _, tc := range []struct {
		p    NetPolicy
		want string
	}{
		{NetPolicy{}, "nat"},
		{NetPolicy{Mode: NetNone, Isolate: true}, "none --isolate"},
		{NetPolicy{Mode: NetAllow, Allow: []string{"a.test", "10.0.0.0/8:443"}}, "allow=a.test,10.0.0.0/8:443"},
	} {
		if got := tc.p.String(); got != tc.want {
			t.Errorf("%+v.String() = %q, want %q", tc.p, got, tc.want)
		}
	}
}
