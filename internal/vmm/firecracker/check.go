package firecracker

import (
	"context"
	"fmt"

	"banger/internal/vmm"
	"banger/internal/vmm/fchost"
)

var _ vmm.Checker = (*Driver)(nil)

// Check reports whether Start can work here: the binary runs, speaks a
// supported API version, and /dev/kvm is usable.
func (d *Driver) Check(ctx context.Context) error {
	if err := d.opts.CheckKVM(); err != nil {
		return err
	}
	ver, err := fchost.Probe(ctx, d.opts.Bin)
	if err != nil {
		return fmt.Errorf("%w: %v", vmm.ErrUnavailable, err)
	}
	if !fchost.SupportedAPIVersion(ver) {
		return fmt.Errorf("%w: firecracker %s is too old: banger needs API %s or a later 1.x release", vmm.ErrUnavailable, ver, fchost.MinAPIVersion)
	}
	return nil
}
