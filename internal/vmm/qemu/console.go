package qemu

import (
	"context"
	"fmt"
	"io"
	"net"
	"time"

	"banger/internal/vmm"
)

// consoleDrain bounds how long a machine's exit waits for the last
// console output to reach the log.
const consoleDrain = 3 * time.Second

// attachConsole connects to QEMU's console socket, retrying until it
// answers, QEMU exits or ctx is done, and copies the console into the
// capped log at spec.ConsoleLog until QEMU closes it. A QEMU started with
// wait=on runs the guest only from then on.
func (m *Machine) attachConsole(ctx context.Context) error {
	delay := 2 * time.Millisecond
	var conn net.Conn
	for {
		var d net.Dialer
		c, err := d.DialContext(ctx, "unix", m.paths.Console)
		if err == nil {
			conn = c
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("connecting to the console: %w (last error: %v)", ctx.Err(), err)
		case <-m.done:
			return fmt.Errorf("connecting to the console: %w", vmm.ErrNotRunning)
		case <-time.After(delay):
		}
		delay = min(delay*2, 100*time.Millisecond)
	}
	log, err := vmm.OpenConsoleLog(m.spec.ConsoleLog, m.spec.ConsoleLogMax)
	if err != nil {
		conn.Close()
		return err
	}
	m.consoleMu.Lock()
	m.console = make(chan struct{})
	done := m.console
	m.consoleMu.Unlock()
	go func() {
		defer close(done)
		if _, err := io.Copy(log, conn); err != nil {
			m.log.Warn("console copy ended", "err", err)
		}
		conn.Close()
		log.Close()
	}()
	return nil
}

// drainConsole waits (bounded) for the console copy to finish once QEMU
// has exited, so that a guest's last words are in the log before Done.
func (m *Machine) drainConsole() {
	m.consoleMu.Lock()
	done := m.console
	m.consoleMu.Unlock()
	if done == nil {
		return
	}
	select {
	case <-done:
	case <-time.After(consoleDrain):
	}
}
