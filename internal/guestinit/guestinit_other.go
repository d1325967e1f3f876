//go:build !linux

package guestinit

import "errors"

// InInitrd reports whether this process runs as /init of banger's initrd.
// It is always false off Linux.
func InInitrd() bool { return false }

// Run is only meaningful inside a Linux guest.
func Run() error { return errors.New("guestinit: only runs inside a Linux guest") }
