package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
	"golang.org/x/sys/unix"

	"banger/internal/guest"
	buildversion "banger/internal/version"
)

const (
	// portPollInterval is how often an idle virtio-serial port is read
	// again: a read returns EOF while no host is connected. The first
	// polls after a session ends, and the first reopen, come sooner
	// (portPollFirst, doubling): that is when a restored guest's new
	// host is about to get in.
	portPollInterval = 75 * time.Millisecond
	portPollFirst    = 10 * time.Millisecond
	// portRetryInterval is how often a missing port is looked for again.
	portRetryInterval = 2 * time.Second
	// portNameWait bounds the wait for a port's sysfs name to be filled in.
	portNameWait = 2 * time.Second
	// portMaxPause caps the pause between reopens of a failing port; it
	// is short because a restored guest's host is waiting to get in.
	portMaxPause = 300 * time.Millisecond
)

// Run serves the agent protocol until ctx is done, as a service under the
// guest's init system.
func Run(ctx context.Context) error {
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	logger.Info("banger-agent starting", "version", buildversion.String(), "protocol", guest.ProtocolVersion)
	growRoot(logger)
	s := NewServer(logger, func() error { return servicePowerOff(logger) })
	s.ServeTransports(ctx)
	return nil
}

// ServeTransports serves every transport the guest offers until ctx is
// done: AF_VSOCK port guest.AgentPort when the kernel has vsock, and the
// virtio-serial port named guest.SerialPortName.
func (s *Server) ServeTransports(ctx context.Context) {
	var wg sync.WaitGroup
	if ln, err := listenVsock(guest.AgentPort); err != nil {
		s.logger.Info("vsock unavailable", "err", err)
	} else {
		s.logger.Info("listening on vsock", "port", guest.AgentPort)
		wg.Go(func() { s.serveVsock(ctx, ln) })
	}
	wg.Go(func() {
		err := s.ServePort(ctx, func(ctx context.Context) (io.ReadWriteCloser, error) {
			return openSerialPort(ctx)
		})
		if err != nil && ctx.Err() == nil {
			s.logger.Error("virtio-serial", "err", err)
		}
	})
	wg.Wait()
}

// ServePort serves a virtio-serial-like port until ctx is done: open
// returns the port, whose reads report EOF while no host is connected.
// Each time a host connects a new session starts, so a host may
// disconnect and come back (a daemon restart) without a guest reboot.
//
// It never gives up on the port: a restore from a memory snapshot gives
// the port a new host side, and the guest may see that as EOF, as an
// error such as EIO, or as nothing at all until the new host's handshake
// breaks into the old session. Each of them ends the session (the
// commands of its streams die with it; sessions are the agent's and go
// on) and the port is opened again, after a pause that doubles (up to
// portMaxPause) while the port keeps failing without a host getting
// through.
func (s *Server) ServePort(ctx context.Context, open func(context.Context) (io.ReadWriteCloser, error)) error {
	var lastErr string
	pause := portPollFirst
	for ctx.Err() == nil {
		port, err := open(ctx)
		if err != nil {
			if err.Error() != lastErr {
				s.logger.Info("agent port not available; will retry", "err", err)
				lastErr = err.Error()
			}
			sleepCtx(ctx, portRetryInterval)
			continue
		}
		served, err := s.servePortOnce(ctx, port)
		if served {
			lastErr, pause = "", portPollFirst
		}
		switch {
		case err == nil || ctx.Err() != nil:
		case errors.Is(err, yamux.ErrInvalidVersion):
			// A new host's handshake broke into the old session: the
			// host reconnected faster than the port reported it.
			s.logger.Info("host reconnected")
		default:
			if err.Error() != lastErr {
				s.logger.Warn("agent port session ended; reopening the port", "err", err)
				lastErr = err.Error()
			}
			sleepCtx(ctx, pause)
			if !served {
				pause = min(2*pause, portMaxPause)
			}
		}
	}
	return nil
}

// servePortOnce waits on an open port for a host's handshake, then
// serves one session. served reports whether a host got through.
func (s *Server) servePortOnce(ctx context.Context, port io.ReadWriteCloser) (served bool, err error) {
	stop := context.AfterFunc(ctx, func() { port.Close() })
	defer stop()
	idle := &idlePort{ctx: ctx, port: port, waiting: true, poll: portPollFirst}
	r, err := s.accept(idle, "virtio-serial")
	if err != nil {
		port.Close()
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		return false, fmt.Errorf("handshake: %w", err)
	}
	idle.waiting = false // from now on EOF means the host left
	return true, s.serveSession(ctx, &splitConn{Reader: r, rwc: port})
}

// idlePort reads a virtio-serial port. While waiting, the EOF a port
// returns when no host is connected means "poll again shortly".
type idlePort struct {
	ctx     context.Context
	port    io.ReadWriteCloser
	waiting bool          // only touched by the goroutine that reads
	poll    time.Duration // the next pause after an EOF, up to portPollInterval
}

func (p *idlePort) Read(b []byte) (int, error) {
	for {
		n, err := p.port.Read(b)
		if n > 0 || !p.waiting || !errors.Is(err, io.EOF) {
			return n, err
		}
		if p.ctx.Err() != nil {
			return 0, p.ctx.Err()
		}
		sleepCtx(p.ctx, p.poll)
		p.poll = min(2*p.poll, portPollInterval)
	}
}

func (p *idlePort) Write(b []byte) (int, error) { return p.port.Write(b) }

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// openSerialPort opens the agent's virtio-serial port.
func openSerialPort(ctx context.Context) (*os.File, error) {
	dev, err := findSerialPort(ctx, "/sys/class/virtio-ports", "/dev")
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(dev, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", dev, err)
	}
	return f, nil
}

// findSerialPort finds the device of the port named guest.SerialPortName
// under sysDir. A port's name can read empty for a moment after the
// driver loaded, so unnamed ports are re-read for a while; then the first
// unnamed port's ...p1 device is the fallback.
func findSerialPort(ctx context.Context, sysDir, devDir string) (string, error) {
	deadline := time.Now().Add(portNameWait)
	for {
		ports, _ := filepath.Glob(filepath.Join(sysDir, "vport*"))
		sort.Strings(ports)
		var unnamed []string
		for _, p := range ports {
			b, err := os.ReadFile(filepath.Join(p, "name"))
			name := strings.TrimSpace(string(b))
			switch {
			case err == nil && name == guest.SerialPortName:
				return filepath.Join(devDir, filepath.Base(p)), nil
			case name == "":
				unnamed = append(unnamed, filepath.Base(p))
			}
		}
		if len(unnamed) == 0 {
			return "", fmt.Errorf("no virtio-serial port named %s", guest.SerialPortName)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			for _, p := range unnamed {
				if strings.HasSuffix(p, "p1") {
					return filepath.Join(devDir, p), nil
				}
			}
			return filepath.Join(devDir, unnamed[0]), nil
		}
		sleepCtx(ctx, 100*time.Millisecond)
	}
}

// servicePowerOff powers the guest off through systemd when it is the
// init system, else directly.
func servicePowerOff(logger *slog.Logger) error {
	time.Sleep(100 * time.Millisecond) // let the answer leave
	if _, err := os.Stat("/run/systemd/system"); err == nil {
		out, err := exec.Command("systemctl", "poweroff").CombinedOutput()
		if err == nil {
			return nil
		}
		logger.Warn("systemctl poweroff", "err", err, "output", strings.TrimSpace(string(out)))
	}
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		return fmt.Errorf("power off: %w", err)
	}
	return nil
}
