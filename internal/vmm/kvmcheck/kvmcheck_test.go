package kvmcheck

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckMissingDevice(t *testing.T) {
	err := Check(t.Context(), filepath.Join(t.TempDir(), "kvm"), "qemu-system-x86_64")
	if err == nil || !strings.Contains(err.Error(), "is missing") {
		t.Fatalf("Check(missing) = %v; want 'is missing'", err)
	}
}

// TestCheckThisHost runs the real probe: whatever the host has, Check
// must return (within its bound) and agree with itself.
func TestCheckThisHost(t *testing.T) {
	a := Check(t.Context(), "/dev/kvm", "qemu-system-x86_64")
	b := Check(t.Context(), "/dev/kvm", "qemu-system-x86_64")
	if (a == nil) != (b == nil) {
		t.Fatalf("two probes disagree: %v, %v", a, b)
	}
	t.Logf("kvm on this host: %v", a)
}
