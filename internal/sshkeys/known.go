package sshkeys

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"banger/internal/atomicfile"
)

// Pin records hostKey (an authorized_keys line) as the only key of host
// in the known_hosts file at path, replacing whatever was pinned for host
// before (VM addresses are reused). Concurrent Pins are serialized with a
// lock file and the file is replaced atomically.
func Pin(path, host, hostKey string) error {
	fields := strings.Fields(hostKey)
	if len(fields) < 2 {
		return fmt.Errorf("host key of %s is malformed", host)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("making known_hosts directory: %w", err)
	}
	lock, err := os.OpenFile(path+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("locking known_hosts: %w", err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("locking known_hosts: %w", err)
	}
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("reading known_hosts: %w", err)
	}
	var out bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(old))
	for sc.Scan() {
		line := sc.Text()
		if f := strings.Fields(line); len(f) > 0 && f[0] == host {
			continue
		}
		out.WriteString(line + "\n")
	}
	fmt.Fprintf(&out, "%s %s %s\n", host, fields[0], fields[1])
	if err := atomicfile.WriteFile(path, out.Bytes(), 0o600); err != nil {
		return fmt.Errorf("writing known_hosts: %w", err)
	}
	return nil
}

// ErrHostKeyChanged reports a server whose host key is not the pinned one.
var ErrHostKeyChanged = errors.New("the host key is not the one banger pinned")

// Probe connects to addr (host:port) once, checks that the server holds
// hostKey and logs in as user with signer. It returns nil only when the
// whole handshake and authentication succeeded.
func Probe(ctx context.Context, addr, user, hostKey string, signer ssh.Signer) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
	}
	c, err := Dial(ctx, addr, user, hostKey, signer)
	if err != nil {
		return err
	}
	return c.Close()
}

// WaitReady probes addr until it succeeds or ctx is done, and returns
// the last probe error on timeout. A changed host key ends the wait at
// once with ErrHostKeyChanged.
func WaitReady(ctx context.Context, addr, user, hostKey string, signer ssh.Signer) error {
	var last error
	for {
		pctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		last = Probe(pctx, addr, user, hostKey, signer)
		cancel()
		if last == nil || errors.Is(last, ErrHostKeyChanged) {
			return last
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), last)
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// Args are the ssh(1) arguments that log in as user at host with key,
// trusting only the key pinned in knownHosts. tty forces a terminal.
// The command, if any, follows them. The user's ~/.ssh/config still
// applies (no -F), but options given here win over it: in particular no
// agent, X11 or port forwarding reaches the guest, whatever the config
// says, since a hostile guest could use a forwarded agent.
func Args(key, knownHosts, user, host string, tty bool) []string {
	args := []string{
		"-o", "ForwardAgent=no",
		"-o", "ForwardX11=no",
		"-o", "ClearAllForwardings=yes",
		"-i", key,
		"-o", "IdentitiesOnly=yes",
		"-o", "UserKnownHostsFile=" + knownHosts,
		"-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "StrictHostKeyChecking=yes",
		"-o", "HostKeyAlgorithms=ssh-ed25519",
		"-o", "UpdateHostKeys=no",
		"-o", "PasswordAuthentication=no",
		"-o", "LogLevel=ERROR",
	}
	if tty {
		args = append(args, "-t")
	}
	return append(args, user+"@"+host)
}

// Dial connects to addr, checks the pinned hostKey and logs in as user.
// The caller closes the client.
func Dial(ctx context.Context, addr, user, hostKey string, signer ssh.Signer) (*ssh.Client, error) {
	want, _, _, _, err := ssh.ParseAuthorizedKey([]byte(hostKey))
	if err != nil {
		return nil, fmt.Errorf("parsing host key: %w", err)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	cfg := &ssh.ClientConfig{
		User: user,
		Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: func(_ string, _ net.Addr, got ssh.PublicKey) error {
			if !bytes.Equal(got.Marshal(), want.Marshal()) {
				return fmt.Errorf("%w (it presents %s)", ErrHostKeyChanged, ssh.FingerprintSHA256(got))
			}
			return nil
		},
		HostKeyAlgorithms: []string{want.Type()},
	}
	c, chans, reqs, err := ssh.NewClientConn(conn, addr, cfg)
	if err != nil {
		conn.Close()
		return nil, err
	}
	conn.SetDeadline(time.Time{})
	return ssh.NewClient(c, chans, reqs), nil
}
