// Package agent is the guest side of banger: it serves the daemon's
// requests (exec, files, shutdown) over vsock or virtio-serial.
package agent

import (
	"context"
	"errors"
)

// Run serves the agent protocol until ctx is done.
func Run(ctx context.Context) error { return errors.New("agent: not implemented") }

// RunAsInit runs the agent as PID 1 in an image without an init system:
// it reaps zombies and serves the agent protocol.
func RunAsInit() error { return errors.New("agent: not implemented") }
