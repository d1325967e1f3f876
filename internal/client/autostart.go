package client

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"banger/internal/api"
	"banger/internal/config"
)

// ExitAlreadyRunning is bangerd's exit status when another daemon holds
// the state directory. Whoever started it can then just use that daemon.
const ExitAlreadyRunning = 3

// StartError says why bangerd could not be started, and what to run.
type StartError struct {
	Cause string
}

func (e *StartError) Error() string {
	return fmt.Sprintf("bangerd is not running and could not be started: %s (try: sudo bangerd --foreground to see why)", e.Cause)
}

// Ensure returns a client for the daemon of dirs, starting bangerd when
// none answers: directly when root, else through sudo. Two callers racing
// here end with one daemon: the loser's bangerd exits with
// ExitAlreadyRunning and both use the winner.
func Ensure(ctx context.Context, dirs config.Dirs) (*Client, error) {
	c := New(dirs.Socket())
	err := c.Ping(ctx)
	if err == nil {
		return c, nil
	}
	if err := notYours(dirs, err); err != nil {
		return nil, err
	}
	bin, err := DaemonBinary()
	if err != nil {
		return nil, &StartError{Cause: err.Error()}
	}
	args := []string{bin}
	if os.Geteuid() != 0 {
		sudo, err := exec.LookPath("sudo")
		if err != nil {
			return nil, &StartError{Cause: "bangerd needs root and sudo is not installed"}
		}
		args = []string{sudo, "--preserve-env=" + config.HomeEnv + ",XDG_CONFIG_HOME,XDG_CACHE_HOME", bin}
	}
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Stdin = os.Stdin
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	var ee *exec.ExitError
	if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == ExitAlreadyRunning) {
		cause := strings.TrimSpace(out.String())
		if cause == "" {
			cause = err.Error()
		}
		return nil, &StartError{Cause: cause}
	}
	if err := WaitReady(ctx, c, 15*time.Second, 0); err != nil {
		return nil, &StartError{Cause: err.Error()}
	}
	return c, nil
}

// WaitReady polls until the daemon answers or timeout passes. When pid is
// not zero and that process exits first, it stops early.
func WaitReady(ctx context.Context, c *Client, timeout time.Duration, pid int) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		if last = c.Ping(ctx); last == nil {
			return nil
		}
		if pid != 0 && syscall.Kill(pid, 0) != nil {
			return errors.New("bangerd exited during start-up")
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("bangerd did not answer on %s within %s: %v", c.Socket(), timeout, last)
		case <-tick.C:
		}
	}
}

// DaemonBinary finds bangerd: $BANGERD_BIN, beside this executable, then
// in PATH.
func DaemonBinary() (string, error) {
	if b := os.Getenv("BANGERD_BIN"); b != "" {
		return b, nil
	}
	if exe, err := os.Executable(); err == nil {
		cand := filepath.Join(filepath.Dir(exe), "bangerd")
		if st, err := os.Stat(cand); err == nil && !st.IsDir() {
			return cand, nil
		}
	}
	if p, err := exec.LookPath("bangerd"); err == nil {
		return p, nil
	}
	return "", errors.New("bangerd binary not found beside banger or in PATH (run: sudo make install)")
}

// notYours turns a ping that failed because this user may not use the
// daemon of dirs into an error saying so; starting another daemon (through
// sudo) would not help. Other errors give nil.
func notYours(dirs config.Dirs, err error) error {
	var ae *api.Error
	switch {
	case errors.As(err, &ae) && ae.Code == api.PermissionDenied:
		return err
	case errors.Is(err, fs.ErrPermission):
		return api.Errorf(api.PermissionDenied, "the bangerd of state directory %s serves another user (%s is not open to you)", dirs.State, dirs.RunDir()).
			WithHint("use your own state directory: set " + config.HomeEnv + " to a directory you own")
	}
	return nil
}

// Stop asks the daemon to exit and waits, up to 15s, until its process is
// gone, so that its lock is free. running is false when no daemon
// answered, and there was nothing to stop. VMs keep running; the next
// daemon re-adopts them.
func (c *Client) Stop(ctx context.Context) (running bool, err error) {
	v, err := c.Version(ctx)
	if err != nil {
		return false, nil
	}
	if err := c.Shutdown(ctx); err != nil {
		return true, err
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(15 * time.Second)
	for {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", v.PID)); err != nil {
			return true, nil
		}
		select {
		case <-ctx.Done():
			return true, ctx.Err()
		case <-deadline:
			return true, fmt.Errorf("bangerd did not stop within 15s")
		case <-tick.C:
		}
	}
}
