package daemon

import (
	"context"

	"banger/internal/image"
	"banger/internal/store"
)

// prepareGuest puts per-VM pieces into the VM's own rootfs copy before its
// first boot.
func (m *vmManager) prepareGuest(ctx context.Context, v store.VM, im image.Image, rootfs string) error {
	return nil
}
