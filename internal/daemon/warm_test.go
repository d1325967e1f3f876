package daemon

import (
	"strings"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/image"
)

// A warm snapshot's name is a valid snapshot name whatever the image is
// called, and differs whenever what decides a match differs.
func TestWarmName(t *testing.T) {
	im := image.Image{Name: "Docker.io/Library/Debian:12", Digest: "sha256:ab", CreatedAt: time.Unix(1, 0)}
	req := api.CreateVMRequest{Kernel: "generic-6.1", VCPUs: 2, MemoryMiB: 1024, DiskBytes: 16 << 30}
	n := warmName(im, req, "qemu", "7.2")
	if !snapNameRE.MatchString(n) || !strings.HasPrefix(n, "warm-docker.io-library-debian-12-") {
		t.Errorf("warm name %q", n)
	}
	long := im
	long.Name = strings.Repeat("x", 200)
	if n := warmName(long, req, "qemu", "7.2"); !snapNameRE.MatchString(n) {
		t.Errorf("warm name of a long image name: %q", n)
	}
	other := req
	other.MemoryMiB = 2048
	repulled := im
	repulled.CreatedAt = time.Unix(2, 0)
	for what, got := range map[string]string{
		"memory":       warmName(im, other, "qemu", "7.2"),
		"qemu version": warmName(im, req, "qemu", "8.0"),
		"image pull":   warmName(repulled, req, "qemu", "7.2"),
	} {
		if got == n {
			t.Errorf("another %s gives the same warm name %q", what, n)
		}
	}
}

// --cold, warm_start off and a VMM without snapshots boot cold and say
// why, making no warm snapshot.
func TestWarmForRefusals(t *testing.T) {
	m := &vmManager{vmParts: vmParts{def: "none", cfg: vmSettings{WarmStart: true}}}
	im := image.Image{Name: "fixture"}
	if p := m.warmFor(t.Context(), api.CreateVMRequest{Cold: true}, im); p.found || p.make != "" || p.why != "--cold" {
		t.Errorf("--cold: %+v", p)
	}
	if p := m.warmFor(t.Context(), api.CreateVMRequest{}, im); p.found || p.make != "" || !strings.Contains(p.why, "vmm none has no memory snapshots") {
		t.Errorf("no vmm: %+v", p)
	}
	m.cfg.WarmStart = false
	if p := m.warmFor(t.Context(), api.CreateVMRequest{}, im); p.found || p.make != "" || !strings.Contains(p.why, "warm_start is off") {
		t.Errorf("warm_start off: %+v", p)
	}
}
