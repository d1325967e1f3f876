// Package guestinit is the /init of banger's initrd: it loads the kernel
// modules the guest needs, mounts the root drive and hands over to the
// rootfs's init. It runs inside the guest as PID 1.
package guestinit

import "errors"

// InInitrd reports whether this process runs as /init of banger's initrd.
func InInitrd() bool { return false }

// Run does the initrd's work and execs the rootfs's init. It returns only
// on error.
func Run() error { return errors.New("guestinit: not implemented") }
