package qemu

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// cidRefused tells from QEMU's output whether vhost-vsock refused the
// guest cid because another VM on the host holds it (QEMU prints
// "vhost-vsock: unable to set guest cid: Address already in use").
func cidRefused(qemuLog string) bool {
	return strings.Contains(qemuLog, "unable to set guest cid") &&
		strings.Contains(qemuLog, "Address already in use")
}

// dialVsock connects to port on the guest with context id cid over
// AF_VSOCK (QEMU's vhost-vsock-device). The socket is non-blocking and
// driven by Go's poller, so ctx and deadlines work.
func dialVsock(ctx context.Context, cid, port uint32) (net.Conn, error) {
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("vsock socket: %w", err)
	}
	f := os.NewFile(uintptr(fd), "vsock:"+strconv.FormatUint(uint64(cid), 10))
	err = unix.Connect(fd, &unix.SockaddrVM{CID: cid, Port: port})
	if errors.Is(err, unix.EINPROGRESS) {
		err = awaitConnect(ctx, f)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("vsock connect cid %d port %d: %w", cid, port, err)
	}
	return &vsockConn{File: f, remote: vsockAddr{cid, port}}, nil
}

// awaitConnect waits for a non-blocking connect to finish.
func awaitConnect(ctx context.Context, f *os.File) error {
	if d, ok := ctx.Deadline(); ok {
		f.SetWriteDeadline(d)
		defer f.SetWriteDeadline(time.Time{})
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var soErr error
	werr := rc.Write(func(fd uintptr) bool {
		n, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR)
		if err != nil {
			soErr = err
			return true
		}
		if n != 0 {
			soErr = unix.Errno(n)
			return true
		}
		// Still connecting while there is no peer and no error.
		_, err = unix.Getpeername(int(fd))
		return !errors.Is(err, unix.ENOTCONN)
	})
	if werr != nil {
		return werr
	}
	return soErr
}

// vsockConn is a net.Conn over an AF_VSOCK stream socket.
type vsockConn struct {
	*os.File
	remote vsockAddr
}

func (c *vsockConn) LocalAddr() net.Addr  { return vsockAddr{unix.VMADDR_CID_HOST, 0} }
func (c *vsockConn) RemoteAddr() net.Addr { return c.remote }

// vsockAddr is a vsock endpoint.
type vsockAddr struct{ cid, port uint32 }

func (a vsockAddr) Network() string { return "vsock" }
func (a vsockAddr) String() string  { return fmt.Sprintf("vsock:%d:%d", a.cid, a.port) }
