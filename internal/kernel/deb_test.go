package kernel

import (
	"context"
	"debug/elf"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"testing"
)

func TestExtractRealDeb(t *testing.T) {
	c := extractedDeb(t)
	if !regexp.MustCompile(`^6\.1\.0-\d+-cloud-amd64$`).MatchString(c.Release) {
		t.Errorf("Release = %q", c.Release)
	}
	bz, err := os.ReadFile(c.Vmlinuz)
	if err != nil {
		t.Fatal(err)
	}
	if kind, err := kernelKind(bz); kind != "bzImage" {
		t.Fatalf("vmlinuz kind = %q, %v", kind, err)
	}
	if got := kernelRelease(bz); got != c.Release {
		t.Errorf("kernelRelease(bzImage) = %q, want %q", got, c.Release)
	}
	for _, f := range []string{"modules.builtin", "kernel/drivers/virtio/virtio_mmio.ko", "kernel/fs/overlayfs/overlay.ko"} {
		if _, err := os.Stat(filepath.Join(c.Modules, f)); err != nil {
			t.Errorf("module tree: %v", err)
		}
	}

	t.Run("module order", func(t *testing.T) {
		tree, err := readModuleTree(c.Modules)
		if err != nil {
			t.Fatal(err)
		}
		order, err := tree.resolve(InitrdModules)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("initrd modules: %v", order)
		if slices.Contains(order, "ext4") {
			t.Errorf("ext4 is built in and must be skipped: %v", order)
		}
		before := [][2]string{
			{"virtio_ring", "virtio"}, {"virtio", "virtio_mmio"}, {"virtio", "virtio_blk"},
			{"failover", "net_failover"}, {"net_failover", "virtio_net"},
			{"vsock", "vmw_vsock_virtio_transport_common"},
			{"vmw_vsock_virtio_transport_common", "vmw_vsock_virtio_transport"},
		}
		for _, b := range before {
			i, j := slices.Index(order, b[0]), slices.Index(order, b[1])
			if i < 0 || j < 0 || i > j {
				t.Errorf("%s must load before %s: %v", b[0], b[1], order)
			}
		}
		if _, err := tree.resolve([]string{"no_such_module"}); err == nil {
			t.Error("resolving a missing module succeeded")
		}
	})

	t.Run("vmlinux", func(t *testing.T) {
		vm := filepath.Join(t.TempDir(), "vmlinux")
		if err := writeVmlinux(c.Vmlinuz, vm); err != nil {
			t.Fatal(err)
		}
		f, err := elf.Open(vm)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if f.Machine != elf.EM_X86_64 {
			t.Errorf("machine %v", f.Machine)
		}
		data, _ := os.ReadFile(vm)
		if got := kernelRelease(data); got != c.Release {
			t.Errorf("kernelRelease(vmlinux) = %q, want %q", got, c.Release)
		}
	})
}

func TestExtractCorruptDeb(t *testing.T) {
	deb := realDeb(t)
	good, err := os.ReadFile(deb)
	if err != nil {
		t.Fatal(err)
	}
	flipped := append([]byte(nil), good...)
	flipped[len(flipped)/2] ^= 0xff // inside data.tar.xz
	tests := []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"not ar", []byte("hello, this is not a package at all")},
		{"truncated", good[:len(good)/3]},
		{"flipped byte", flipped},
		{"no data member", good[:8+60+4]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "x.deb")
			os.WriteFile(p, tt.data, 0o644)
			_, err := extractDeb(context.Background(), p, t.TempDir())
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
		})
	}
}

func TestLZ4CorruptNoPanic(t *testing.T) {
	c := extractedDeb(t)
	bz, _ := os.ReadFile(c.Vmlinuz)
	for _, off := range []int{0x24c, 100000, len(bz) - 10} {
		bad := append([]byte(nil), bz...)
		bad[off] ^= 0x5a
		// Must not panic; an error or an ELF without PVH note are fine.
		vmlinuxFromBzImage(bad)
	}
}
