package network

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
)

// Preflight checks what banger needs before it changes anything: the tun
// device and CAP_NET_ADMIN. It only reads; each error says how to fix it.
func (m *Manager) Preflight(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	fi, err := os.Stat(m.tunPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%w (path %s): load the tun module (modprobe tun), or in a container pass --device /dev/net/tun", ErrNoTun, m.tunPath)
	case err != nil:
		return fmt.Errorf("checking %s: %w", m.tunPath, err)
	case fi.Mode()&fs.ModeCharDevice == 0:
		return fmt.Errorf("%w: %s is not a character device; recreate it with mknod %s c 10 200", ErrNoTun, m.tunPath, m.tunPath)
	}
	ok, err := m.hasNetAdmin()
	if err != nil {
		return fmt.Errorf("reading capabilities: %w", err)
	}
	if !ok {
		return fmt.Errorf("%w: bangerd manages the bridge, taps and NAT; run it as root (sudo bangerd) or grant it with setcap cap_net_admin+ep", ErrNoNetAdmin)
	}
	return nil
}

// hasNetAdmin reports whether CAP_NET_ADMIN is in the effective set of the
// calling thread.
func hasNetAdmin() (bool, error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false, fmt.Errorf("capget: %w", err)
	}
	const bit = unix.CAP_NET_ADMIN
	return data[bit/32].Effective&(1<<(bit%32)) != 0, nil
}
