package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"

	"banger/internal/api"
	"banger/internal/config"
	"banger/internal/sshkeys"
)

// SSHWait bounds how long vm ssh waits for a booting guest's sshd.
const SSHWait = 60 * time.Second

// SSHInfo returns the address and pinned host key of a VM's sshd.
func (c *Client) SSHInfo(ctx context.Context, vm string) (api.SSHInfo, error) {
	var out api.SSHInfo
	return out, c.Do(ctx, http.MethodGet, path("vms", vm, "ssh"), nil, &out)
}

// SSHKeys are the files banger's ssh logins use: the user's key and
// banger's own known_hosts, where each VM's host key is pinned.
type SSHKeys struct {
	Key, KnownHosts string
}

// UserKeys returns the ssh files of cfg under d, making the user's key
// when it is missing.
func UserKeys(cfg config.Config, d config.Dirs) (SSHKeys, error) {
	k := SSHKeys{Key: cfg.SSHKey(d), KnownHosts: filepath.Join(d.Config, "ssh", "known_hosts")}
	if _, err := sshkeys.EnsureUserKey(k.Key); err != nil {
		return SSHKeys{}, err
	}
	return k, nil
}

// SSHOptions is one vm ssh.
type SSHOptions struct {
	Keys SSHKeys
	// Remote is the command to run; none opens a login shell.
	Remote []string
	// TTY gives the session a terminal.
	TTY bool
	// Wait bounds the wait for a booting guest's sshd (SSHWait).
	Wait    time.Duration
	Stdio   Stdio
	Display Display
}

// SSH runs the system ssh into vm as root, trusting only the host key
// banger pinned for it, and returns ssh's exit status. A VM just made may
// have its agent up before sshd: SSH first waits, up to o.Wait, for sshd
// to answer with the pinned key.
func (c *Client) SSH(ctx context.Context, vm string, o SSHOptions) (int, error) {
	g := &guestSSH{c: c, vm: vm, keys: o.Keys}
	if err := g.wait(ctx, time.Now().Add(o.Wait), o.Display); err != nil {
		return 0, err
	}
	return g.session(ctx, o.Remote, o.TTY, o.Stdio)
}

// guestSSH reaches one VM's sshd. It asks bangerd for the address and
// pinned host key once, at the first need, and reads the user's key once.
type guestSSH struct {
	c      *Client
	vm     string
	keys   SSHKeys
	info   *api.SSHInfo
	signer ssh.Signer
}

// target returns the VM's sshd and the user's signer.
func (g *guestSSH) target(ctx context.Context) (api.SSHInfo, ssh.Signer, error) {
	if g.info == nil {
		info, err := g.c.SSHInfo(ctx, g.vm)
		if err != nil {
			return api.SSHInfo{}, nil, err
		}
		g.info = &info
	}
	if g.signer == nil {
		s, err := sshkeys.Signer(g.keys.Key)
		if err != nil {
			return api.SSHInfo{}, nil, err
		}
		g.signer = s
	}
	return *g.info, g.signer, nil
}

// wait waits until the VM's sshd answers with the pinned host key and
// accepts the user's key, or deadline (at least 5s away) passes. d shows
// the wait when sshd does not answer at once.
func (g *guestSSH) wait(ctx context.Context, deadline time.Time, d Display) error {
	info, signer, err := g.target(ctx)
	if err != nil {
		return err
	}
	if time.Until(deadline) < 5*time.Second {
		deadline = time.Now().Add(5 * time.Second)
	}
	wctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	addr := net.JoinHostPort(info.IP, strconv.Itoa(info.Port))
	pctx, pcancel := context.WithTimeout(wctx, 10*time.Second)
	err = sshkeys.Probe(pctx, addr, info.User, info.HostKey, signer)
	pcancel()
	if err == nil {
		return nil // already up: no progress line
	}
	if errors.Is(err, sshkeys.ErrHostKeyChanged) {
		return hostKeyChanged(g.vm, err)
	}
	p, done := step(d)
	if p != nil {
		p(api.Event{Type: api.EventProgress, Phase: "waiting for sshd"})
	}
	err = sshkeys.WaitReady(wctx, addr, info.User, info.HostKey, signer)
	done()
	switch {
	case err == nil:
		return nil
	case errors.Is(err, sshkeys.ErrHostKeyChanged):
		return hostKeyChanged(g.vm, err)
	case ctx.Err() != nil:
		return ctx.Err()
	}
	return &api.Error{Code: api.Timeout,
		Message: fmt.Sprintf("vm %q did not become ready in time: its sshd never answered (%v)", g.vm, err),
		Hint: fmt.Sprintf("sshd or the guest agent is the likely cause; see banger vm logs %s. "+
			"The VM is still running for inspection; remove it with banger vm delete %s", g.vm, g.vm)}
}

func hostKeyChanged(vm string, err error) error {
	return &api.Error{Code: api.Conflict,
		Message: fmt.Sprintf("refusing to connect to vm %q: %v", vm, err),
		Hint:    "the guest's /etc/ssh/ssh_host_ed25519_key was replaced after banger made it; if that was on purpose, recreate the VM"}
}

// dial logs in to the VM's sshd with the pinned host key, once, briefly.
func (g *guestSSH) dial(ctx context.Context) (*ssh.Client, error) {
	info, signer, err := g.target(ctx)
	if err != nil {
		return nil, err
	}
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return sshkeys.Dial(dctx, net.JoinHostPort(info.IP, strconv.Itoa(info.Port)), info.User, info.HostKey, signer)
}

// session runs the system ssh into the VM with stdio and returns ssh's
// exit status.
func (g *guestSSH) session(ctx context.Context, remote []string, tty bool, stdio Stdio) (int, error) {
	info, _, err := g.target(ctx)
	if err != nil {
		return 0, err
	}
	if err := sshkeys.Pin(g.keys.KnownHosts, info.IP, info.HostKey); err != nil {
		return 0, err
	}
	args := sshkeys.Args(g.keys.Key, g.keys.KnownHosts, info.User, info.IP, tty)
	if info.Port != 22 {
		args = append([]string{"-p", strconv.Itoa(info.Port)}, args...)
	}
	if len(remote) > 0 {
		args = append(append(args, "--"), remote...)
	}
	cmd := exec.Command("ssh", args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdio.In, stdio.Out, stdio.Err
	// ssh ends with banger, like a hung-up terminal would end it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGHUP}
	// Ctrl-C reaches ssh as well (same process group); banger itself
	// only notes it and waits for ssh to end.
	err = cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), nil
	}
	if err != nil {
		return 0, fmt.Errorf("running ssh: %w", err)
	}
	return 0, nil
}
