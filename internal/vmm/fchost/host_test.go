package fchost

import (
	"errors"
	"io/fs"
	"os"
	"strings"
	"testing"

	"banger/internal/prereq"
	"banger/internal/vmm"
)

func TestSupportedAPIVersion(t *testing.T) {
	tests := []struct {
		v    string
		want bool
	}{
		{"1.16.1", true},
		{"v1.16.1", true},
		{"1.16.0", true},
		{"1.16", true},
		{"1.17.0-dev", true},
		{"1.20.3", true},
		{"1.15.9", false},
		{"1.5.0", false},
		{"0.25.0", false},
		{"2.0.0", false},
		{"", false},
		{"latest", false},
		{"1.x.0", false},
	}
	for _, tt := range tests {
		t.Run(tt.v, func(t *testing.T) {
			if got := SupportedAPIVersion(tt.v); got != tt.want {
				t.Errorf("SupportedAPIVersion(%q) = %v, want %v", tt.v, got, tt.want)
			}
		})
	}
}

func TestKVMErrors(t *testing.T) {
	tests := []struct {
		name   string
		err    error
		wantIn string
	}{
		{"missing", fs.ErrNotExist, "modprobe kvm_intel"},
		{"no permission", fs.ErrPermission, "kvm group"},
		{"other", errors.New("boom"), "boom"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := kvmError("/dev/kvm", tt.err)
			if !errors.Is(err, vmm.ErrUnavailable) || !strings.Contains(err.Error(), tt.wantIn) {
				t.Fatalf("kvmError = %v, want ErrUnavailable mentioning %q", err, tt.wantIn)
			}
		})
	}
	t.Run("this host", func(t *testing.T) {
		if _, err := os.Stat(KVMDevice); err == nil {
			prereq.ByDesign(t, "this host has /dev/kvm")
		}
		err := CheckKVM()
		if !errors.Is(err, vmm.ErrUnavailable) || !strings.Contains(err.Error(), "modprobe") {
			t.Fatalf("CheckKVM on a host without /dev/kvm = %v", err)
		}
	})
}

func TestAvailableOnThisHost(t *testing.T) {
	if _, err := os.Stat(KVMDevice); err == nil {
		prereq.ByDesign(t, "this host has /dev/kvm")
	}
	exe, _ := os.Executable()
	if err := Available(exe); !errors.Is(err, vmm.ErrUnavailable) {
		t.Fatalf("Available without /dev/kvm = %v, want ErrUnavailable", err)
	}
}
