package qemu

import (
	"context"
	"fmt"
	"os/exec"

	"banger/internal/vmm"
)

var _ vmm.Checker = (*Driver)(nil)

// Check reports whether the QEMU binary is there.
func (d *Driver) Check(ctx context.Context) error {
	if _, err := exec.LookPath(d.bin); err != nil {
		return fmt.Errorf("qemu binary %q: %w (install qemu-system-x86 or set qemu_bin in config.toml)", d.bin, vmm.ErrUnavailable)
	}
	return nil
}
