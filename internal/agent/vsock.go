package agent

import (
	"context"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// vsockListener is an AF_VSOCK listening socket driven by Go's poller.
type vsockListener struct {
	f *os.File
}

// listenVsock listens on AF_VSOCK port on any CID. It fails when the
// kernel has no vsock transport.
func listenVsock(port uint32) (*vsockListener, error) {
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("vsock socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrVM{CID: unix.VMADDR_CID_ANY, Port: port}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("binding vsock port %d: %w", port, err)
	}
	if err := unix.Listen(fd, 16); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("listening on vsock port %d: %w", port, err)
	}
	return &vsockListener{f: os.NewFile(uintptr(fd), fmt.Sprintf("vsock:%d", port))}, nil
}

// accept waits for the next connection and names its peer; Close
// unblocks it.
func (l *vsockListener) accept() (*os.File, string, error) {
	rc, err := l.f.SyscallConn()
	if err != nil {
		return nil, "", err
	}
	var nfd int
	var sa unix.Sockaddr
	var aerr error
	err = rc.Read(func(fd uintptr) bool {
		nfd, sa, aerr = unix.Accept4(int(fd), unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK)
		return !errors.Is(aerr, unix.EAGAIN)
	})
	if err != nil {
		return nil, "", err
	}
	if aerr != nil {
		return nil, "", aerr
	}
	peer := "vsock"
	if vm, ok := sa.(*unix.SockaddrVM); ok {
		peer = fmt.Sprintf("vsock cid %d port %d", vm.CID, vm.Port)
	}
	return os.NewFile(uintptr(nfd), "vsock-conn"), peer, nil
}

func (l *vsockListener) Close() error { return l.f.Close() }

// serveVsock serves every vsock connection as its own session. Any local
// user of the host can connect to a guest's vsock port, so each
// connection must pass the authenticated handshake before anything is
// served; a peer that fails gets nothing and is logged.
func (s *Server) serveVsock(ctx context.Context, l *vsockListener) {
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	for {
		c, peer, err := l.accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, os.ErrClosed) {
				return
			}
			s.logger.Warn("vsock accept", "err", err)
			sleepCtx(ctx, portPollInterval)
			continue
		}
		go func() {
			if err := s.ServeConn(ctx, c, peer); err != nil && ctx.Err() == nil {
				s.logger.Warn("vsock session", "err", err)
			}
		}()
	}
}
