package network

import (
	"banger/internal/prereq"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestPreflight(t *testing.T) {
	tests := []struct {
		name     string
		tun      func(t *testing.T) string
		netAdmin bool
		wantErr  error
		wantText string
	}{
		{name: "ok", tun: func(*testing.T) string { return "/dev/null" }, netAdmin: true},
		{name: "no tun", tun: func(t *testing.T) string { return filepath.Join(t.TempDir(), "tun") },
			netAdmin: true, wantErr: ErrNoTun, wantText: "modprobe tun"},
		{name: "tun is a plain file", tun: func(t *testing.T) string {
			p := filepath.Join(t.TempDir(), "tun")
			if err := os.WriteFile(p, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			return p
		}, netAdmin: true, wantErr: ErrNoTun, wantText: "mknod"},
		{name: "no CAP_NET_ADMIN", tun: func(*testing.T) string { return "/dev/null" },
			wantErr: ErrNoNetAdmin, wantText: "sudo bangerd"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := testManager(t, nil)
			m.tunPath = tt.tun(t)
			m.hasNetAdmin = func() (bool, error) { return tt.netAdmin, nil }
			err := m.Preflight(t.Context())
			if !errors.Is(err, tt.wantErr) || (err != nil && !strings.Contains(err.Error(), tt.wantText)) {
				t.Fatalf("Preflight = %v, want %v mentioning %q", err, tt.wantErr, tt.wantText)
			}
		})
	}
}

// TestEnsureBridgeRunsPreflight checks, inside a test namespace, that a
// failed preflight stops EnsureBridge before it creates anything.
func TestEnsureBridgeRunsPreflight(t *testing.T) {
	requireNetns(t)
	ns := newNS(t, "pre")
	before := ns.ip(t, "-br", "link")
	m := testManager(t, nil)
	m.tunPath = filepath.Join(t.TempDir(), "tun")
	err := ns.do(func() error { return m.EnsureBridge(t.Context()) })
	if !errors.Is(err, ErrNoTun) {
		t.Fatalf("EnsureBridge = %v, want ErrNoTun", err)
	}
	t.Logf("refused: %v", err)
	if after := ns.ip(t, "-br", "link"); after != before {
		t.Errorf("links changed:\nbefore %s\nafter %s", before, after)
	}
}

// TestPreflightWithoutCapability re-runs this test binary with
// CAP_NET_ADMIN dropped from the bounding set (util-linux setpriv), so the
// real capability check sees it missing.
func TestPreflightWithoutCapability(t *testing.T) {
	if os.Getenv("BANGER_NET_PREFLIGHT_CHILD") == "1" {
		m := testManager(t, nil)
		err := m.Preflight(t.Context())
		if !errors.Is(err, ErrNoNetAdmin) {
			t.Fatalf("Preflight without CAP_NET_ADMIN = %v, want ErrNoNetAdmin", err)
		}
		t.Logf("refused: %v", err)
		return
	}
	if os.Geteuid() != 0 {
		prereq.Missing(t, "needs root to drop a capability that it has")
	}
	if ok, err := hasNetAdmin(); err != nil || !ok {
		t.Fatalf("hasNetAdmin as root = %v, %v; want true", ok, err)
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		prereq.Missing(t, "needs util-linux setpriv to drop CAP_NET_ADMIN")
	}
	cmd := exec.Command(setpriv, "--bounding-set", "-net_admin", "--inh-caps", "-net_admin",
		os.Args[0], "-test.run", "^TestPreflightWithoutCapability$", "-test.v")
	cmd.Env = append(os.Environ(), "BANGER_NET_PREFLIGHT_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "CAP_NET_ADMIN is missing") {
		t.Fatalf("child output lacks the refusal:\n%s", out)
	}
	t.Logf("child:\n%s", out)
}
