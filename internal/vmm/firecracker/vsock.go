package firecracker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// handshakeTimeout bounds one CONNECT/OK exchange.
const handshakeTimeout = 2 * time.Second

// DialVsock opens a stream to port in the guest through Firecracker's
// hybrid vsock: it connects to udsPath, writes "CONNECT <port>\n" and
// expects "OK <host port>\n". While the socket is missing, nobody listens
// in the guest (Firecracker then closes the connection) or the answer is
// not OK, it retries until ctx is done and then returns the last error.
func DialVsock(ctx context.Context, udsPath string, port uint32) (net.Conn, error) {
	return dialVsock(ctx, udsPath, port, nil)
}

// dialVsock is DialVsock that also stops, with errStopped, once stop is
// closed.
func dialVsock(ctx context.Context, udsPath string, port uint32, stop <-chan struct{}) (net.Conn, error) {
	delay := 20 * time.Millisecond
	for {
		conn, err := vsockHandshake(ctx, udsPath, port)
		if err == nil {
			return conn, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("dialing vsock port %d via %s: %w (last error: %w)", port, udsPath, ctx.Err(), err)
		case <-stop:
			return nil, fmt.Errorf("dialing vsock port %d via %s: %w", port, udsPath, errStopped)
		case <-time.After(delay):
		}
		delay = min(delay*2, 500*time.Millisecond)
	}
}

var errStopped = errors.New("firecracker exited")

// vsockHandshake makes one connection attempt.
func vsockHandshake(ctx context.Context, udsPath string, port uint32) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", udsPath)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(handshakeTimeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	_ = conn.SetDeadline(deadline)
	if _, err := fmt.Fprintf(conn, "CONNECT %d\n", port); err != nil {
		conn.Close()
		return nil, fmt.Errorf("writing CONNECT: %w", err)
	}
	// Read the answer byte by byte: whatever follows the newline already
	// belongs to the guest's stream and must stay in conn.
	line, err := readLine(conn, 64)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("reading CONNECT answer (is anything listening on guest port %d?): %w", port, err)
	}
	if !validOK(line) {
		conn.Close()
		return nil, fmt.Errorf("unexpected CONNECT answer %q", line)
	}
	_ = conn.SetDeadline(time.Time{})
	return conn, nil
}

// readLine reads up to and excluding '\n', one byte at a time.
func readLine(conn net.Conn, limit int) (string, error) {
	var sb strings.Builder
	buf := make([]byte, 1)
	for sb.Len() < limit {
		if _, err := conn.Read(buf); err != nil {
			return sb.String(), err
		}
		if buf[0] == '\n' {
			return sb.String(), nil
		}
		sb.WriteByte(buf[0])
	}
	return sb.String(), fmt.Errorf("answer longer than %d bytes", limit)
}

func validOK(line string) bool {
	n, ok := strings.CutPrefix(line, "OK ")
	if !ok {
		return false
	}
	_, err := strconv.ParseUint(n, 10, 32)
	return err == nil
}

// ListenVsock listens for connections the guest opens to host port port:
// Firecracker forwards them to the Unix socket "<udsPath>_<port>".
func ListenVsock(udsPath string, port uint32) (net.Listener, error) {
	path := udsPath + "_" + strconv.FormatUint(uint64(port), 10)
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listening for guest vsock port %d: %w", port, err)
	}
	return l, nil
}
