package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// catalogBundle returns the debian-bookworm catalog image as a bundle,
// built once per fixtures dir on the host side (a test namespace cannot
// reach the Debian mirror): bangerd build-catalog, no daemon.
func catalogBundle(t testing.TB) string {
	t.Helper()
	out := filepath.Join(fixtures(t), "debian-bookworm.tar.zst")
	if _, err := os.Stat(out); err == nil {
		return out
	}
	t.Logf("building the debian-bookworm catalog image into %s (once; a few minutes)", out)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "bangerd"), "build-catalog", "debian-bookworm", "-o", out)
	cmd.Env = append(os.Environ(), "BANGER_AGENT_BIN="+filepath.Join(binDir, "banger-agent"))
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building debian-bookworm: %v\n%s", err, tail(string(b), 3000))
	}
	return out
}

// The default image, built from the Debian archive, imports from its
// bundle, is cached (pull is a no-op), survives export and import byte
// for byte, and boots with its tools.
func TestCatalogImage(t *testing.T) {
	bundle := catalogBundle(t)
	e := imageEnv(t)
	e.ok("image", "import", bundle)
	r := e.banger("image", "pull", "debian-bookworm")
	if r.code != 0 || !strings.Contains(r.stderr, "already present") {
		t.Errorf("second pull is not a no-op: exit %d\n%s", r.code, r.stderr)
	}
	var im struct {
		Distro, Rootfs string
		HasSSHD        bool   `json:"has_sshd"`
		KernelRef      string `json:"kernel_ref"`
	}
	json.Unmarshal([]byte(e.ok("image", "inspect", "debian-bookworm", "--json")), &im)
	if im.Distro != "debian-bookworm" || !im.HasSSHD || im.KernelRef != "generic-6.1" {
		t.Errorf("inspect = %+v", im)
	}

	out := filepath.Join(t.TempDir(), "b.tar.zst")
	sum := strings.Fields(e.ok("image", "export", "debian-bookworm", "-o", out))[0]
	mustContain(t, "bad sha256", e.fails("image", "import", out, "--name", "copy", "--sha256", strings.Repeat("0", 64)), "sha256")
	e.ok("image", "import", out, "--name", "copy", "--sha256", sum)
	var cp struct{ Rootfs string }
	json.Unmarshal([]byte(e.ok("image", "inspect", "copy", "--json")), &cp)
	if a, b := sha256File(t, im.Rootfs), sha256File(t, cp.Rootfs); a != b {
		t.Errorf("rootfs after export+import has sha256 %s, want %s", b, a)
	}
	e.ok("image", "delete", "copy")
	e.noImageLeftovers([]string{"debian-bookworm"})

	start := time.Now()
	e.ok("vm", "create", "--image", "debian-bookworm", "--name", "deb", "--memory", "1G")
	t.Logf("debian-bookworm: vm create to agent-ready %s", time.Since(start).Round(time.Millisecond))
	got := e.ok("vm", "exec", "deb", "--", "sh", "-c",
		"git --version; jq --version; docker --version; curl --version | head -1; gcc --version | head -1; sudo --version | head -1; test -x /usr/sbin/sshd && echo sshd; . /etc/os-release; echo $VERSION_CODENAME")
	mustContain(t, "tools", got, "git version", "jq-", "Docker version", "curl ", "gcc", "Sudo version", "sshd", "bookworm")
	e.ok("vm", "delete", "--force", "deb")
}

func sha256File(t testing.TB, p string) string {
	t.Helper()
	return strings.Fields(run(t, "sha256sum", p))[0]
}
