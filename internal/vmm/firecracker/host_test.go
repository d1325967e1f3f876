package firecracker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/vmm"
	"banger/internal/vmm/fchost"
)

func TestProbe(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(standinEnv, modeOK)
	v, err := fchost.Probe(t.Context(), exe)
	if err != nil || v != "1.16.1" {
		t.Fatalf("fchost.Probe = %q, %v; want 1.16.1", v, err)
	}

	noVersion := filepath.Join(t.TempDir(), "fc")
	os.WriteFile(noVersion, []byte("#!/bin/sh\necho hello\n"), 0o755)
	if _, err := fchost.Probe(t.Context(), noVersion); err == nil {
		t.Error("fchost.Probe of a binary printing no version succeeded")
	}
	if _, err := fchost.Probe(t.Context(), filepath.Join(t.TempDir(), "missing")); !errors.Is(err, vmm.ErrUnavailable) {
		t.Errorf("fchost.Probe of a missing binary = %v, want ErrUnavailable", err)
	}
}

func TestInstanceID(t *testing.T) {
	tests := []struct {
		spec vmm.Spec
		want string
	}{
		{vmm.Spec{ID: "vm-0123"}, "vm-0123"},
		{vmm.Spec{ID: "a_b.c"}, "a-b-c"},
		{vmm.Spec{Name: "dev box"}, "dev-box"},
		{vmm.Spec{}, "banger-vm"},
	}
	for _, tt := range tests {
		if got := instanceID(tt.spec); got != tt.want {
			t.Errorf("instanceID(%+v) = %q, want %q", tt.spec, got, tt.want)
		}
	}
}

func TestDriverCheckBeforeAnythingIsCreated(t *testing.T) {
	noKVM := func() error {
		return fmt.Errorf("%w: /dev/kvm is missing: load kvm_intel or kvm_amd", vmm.ErrUnavailable)
	}
	d := New(Options{Bin: "/nonexistent/firecracker", CheckKVM: noKVM})
	err := d.Check(context.Background())
	if !errors.Is(err, vmm.ErrUnavailable) || !strings.Contains(err.Error(), "kvm") {
		t.Fatalf("Check without kvm = %v", err)
	}
}
