package kvmcheck

import (
	"os"
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

// KVM counts only from kvm_intel or kvm_amd: under kvm_pvm, QEMU starts
// but Debian's kernel hangs in early boot.
func TestCheckVendor(t *testing.T) {
	for _, tc := range []struct {
		mods []string
		want string // "" for nil
	}{
		{[]string{"kvm", "kvm_intel"}, ""},
		{[]string{"kvm", "kvm_amd"}, ""},
		{[]string{"kvm", "kvm_pvm"}, "comes from kvm_pvm, not kvm_intel or kvm_amd"},
		{[]string{"kvm"}, "neither kvm_intel nor kvm_amd"},
	} {
		sys := t.TempDir()
		for _, m := range tc.mods {
			os.MkdirAll(filepath.Join(sys, m, "parameters"), 0o755)
		}
		err := checkVendor(sys)
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("modules %v: %v, want %q", tc.mods, err, tc.want)
		}
	}
}
