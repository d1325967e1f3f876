package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"banger/internal/api"
	"banger/internal/client"
	"banger/internal/config"
	"banger/internal/guest"
	"banger/internal/sshkeys"
	"banger/internal/workspace"
	"sync"
)

// newVMRunCmds returns vm run, ssh and workspace.
func newVMRunCmds() []*cobra.Command {
	return []*cobra.Command{newVMRunCmd(), newVMSSHCmd(), newVMWorkspaceCmd()}
}

// runOptions are the flags of vm run.
type runOptions struct {
	name, image, branch, from string
	rm                        bool
	readyTimeout              int
	cpus                      int
	memory                    string
}

func newVMRunCmd() *cobra.Command {
	var o runOptions
	cmd := &cobra.Command{
		Use:   "run [PATH] [flags] [-- CMD [ARG...]]",
		Short: "Create and start a VM, then open a shell, copy a workspace or run a command",
		Long: `Create a VM, start it, wait until it is ready, then:

  banger vm run                  open an interactive ssh session (bare mode);
                                 leaving it leaves the VM running
  banger vm run ./repo           copy the workspace to /root/<repo> and open a
                                 shell there
  banger vm run [./repo] -- CMD  run CMD in /root/<repo> (or /root) and exit
                                 with its status (128+N for signal N, 127 when
                                 not found)

Workspace: for a git repository, exactly the files ` + "`git ls-files -co --exclude-standard`" + `
lists (tracked and untracked, not ignored) plus .git, with modes, symlinks and
executable bits. A directory that is not a git repository is copied as it is,
every file under it. --from checks out a ref, --branch creates a branch (from
--from, or HEAD) and switches to it; both need git in the guest. When the
workspace has .mise.toml or .tool-versions, a best-effort mise bootstrap runs
in the background, logged to /root/.cache/banger/vm-run-tooling-<repo>.log.

In command mode stdin is passed through and a terminal is used when stdin is
one; Ctrl-C is forwarded to the command, a second Ctrl-C detaches. --rm
deletes the VM once the command ended; by default it is kept.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if n := cmd.ArgsLenAtDash(); n > 1 || (n < 0 && len(args) > 1) {
				return fmt.Errorf("vm run takes at most one PATH before --; put the command after --")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			var path string
			var argv []string
			if n := cmd.ArgsLenAtDash(); n >= 0 {
				argv = args[n:]
				args = args[:n]
			}
			if len(args) == 1 {
				path = args[0]
			}
			return runVM(cmd, o, path, argv)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.name, "name", "", "VM name (default: a generated one)")
	f.StringVar(&o.image, "image", "", "image to boot (default: default_image_name, pulled when missing)")
	f.StringVar(&o.branch, "branch", "", "create and check out this branch in the workspace")
	f.StringVar(&o.from, "from", "", "check out this ref (branch, tag, commit) in the workspace")
	f.BoolVar(&o.rm, "rm", false, "delete the VM after the command ended (command mode)")
	f.IntVar(&o.readyTimeout, "ready-timeout", 90, "seconds to wait for the guest's agent and sshd")
	f.IntVar(&o.cpus, "cpus", 2, "vCPUs")
	f.StringVar(&o.memory, "memory", "1G", "memory, e.g. 512M or 2G"+sizeHelp)
	return cmd
}

// runVM is vm run: create, wait, then the mode's work.
func runVM(cmd *cobra.Command, o runOptions, path string, argv []string) error {
	ctx := cmd.Context()
	if (o.branch != "" || o.from != "") && path == "" {
		return fmt.Errorf("--branch and --from need a workspace PATH")
	}
	var ws workspace.Set
	if path != "" {
		var err error
		if ws, err = workspace.Collect(ctx, path); err != nil {
			return err
		}
		if err := ws.CheckReadable(); err != nil {
			return err
		}
		if (o.branch != "" || o.from != "") && !ws.Git {
			return fmt.Errorf("--branch and --from need a git repository, and %s is not one", path)
		}
	}
	mem, err := parseMiB("--memory", o.memory)
	if err != nil {
		return err
	}
	keyPath, err := userKey()
	if err != nil {
		return err
	}
	c, err := connect(ctx)
	if err != nil {
		return err
	}
	req := api.CreateVMRequest{Name: o.name, Image: o.image, VCPUs: o.cpus, MemoryMiB: mem, ReadyTimeoutSeconds: o.readyTimeout}
	if err := ensureImage(ctx, c, req.Image); err != nil {
		return err
	}
	deadline := time.Now().Add(time.Duration(o.readyTimeout) * time.Second)
	p := newProgress()
	vm, err := c.CreateVM(ctx, req, p.event)
	p.done()
	var ae *api.Error
	switch {
	case err == nil:
	case errors.As(err, &ae), ctx.Err() != nil:
		return err
	default:
		return fmt.Errorf("%w (bangerd went away while making the VM; banger vm list shows what is left and %s says why)",
			err, filepath.Join(dirs().State, "bangerd.log"))
	}
	cwd := "/root"
	if path != "" {
		cwd = workspace.GuestDir(ws.Name)
		if err := prepareWorkspace(ctx, c, vm.Name, ws, cwd, o.from, o.branch); err != nil {
			if o.rm && len(argv) > 0 {
				c.DeleteVM(context.WithoutCancel(ctx), vm.Name, true)
				return err
			}
			return fmt.Errorf("%w (the VM %s is still running; remove it with banger vm delete %s)", err, vm.Name, vm.Name)
		}
	}
	if len(argv) > 0 {
		return commandMode(ctx, c, vm.Name, guest.ExecRequest{Argv: argv, Dir: cwd}, o.rm)
	}
	return bareMode(ctx, c, vm.Name, keyPath, cwd, path != "", deadline)
}

// commandMode runs req in vm, deletes vm when rm is set, and exits with
// the command's status.
func commandMode(ctx context.Context, c *client.Client, vm string, req guest.ExecRequest, rm bool) error {
	code, err := runCommand(ctx, c, vm, req, true)
	if rm {
		if derr := c.DeleteVM(context.WithoutCancel(ctx), vm, true); derr != nil && err == nil {
			err = fmt.Errorf("deleting vm %s: %w", vm, derr)
		}
	}
	if err != nil {
		return err
	}
	if code != 0 {
		return &exitError{code: code}
	}
	return nil
}

// bareMode waits for sshd and opens an interactive session, in dir when
// inWorkspace. The VM keeps running afterwards.
func bareMode(ctx context.Context, c *client.Client, vm, keyPath, dir string, inWorkspace bool, deadline time.Time) error {
	if err := waitSSH(ctx, c, vm, keyPath, deadline); err != nil {
		return err
	}
	var remote []string
	if inWorkspace {
		remote = []string{"cd " + shellQuote(dir) + " && exec \"$SHELL\" -l"}
	}
	code, err := sshSession(ctx, c, vm, keyPath, remote, true)
	fmt.Fprintf(os.Stderr, "\nVM %s is still running: get back in with banger vm ssh %s; remove it with banger vm delete %s\n",
		vm, vm, vm)
	if err != nil {
		return err
	}
	if code != 0 && code != 130 {
		return &exitError{code: code}
	}
	return nil
}

// ensureImage pulls the default image when it is missing. A named image
// that does not exist is left for the daemon to report with the valid
// names.
func ensureImage(ctx context.Context, c *client.Client, name string) error {
	if name != "" {
		return nil
	}
	cfg, _, err := config.Load(dirs().ConfigFile())
	if err != nil {
		return err
	}
	name = cfg.DefaultImageName
	_, err = c.Image(ctx, name)
	var ae *api.Error
	if err == nil || !errors.As(err, &ae) || ae.Code != api.NotFound {
		return err
	}
	fmt.Fprintf(os.Stderr, "image %s is not here yet; pulling it\n", name)
	p := newProgress()
	_, err = c.PullImage(ctx, api.PullImageRequest{Ref: name}, p.event)
	p.done()
	if errors.As(err, &ae) && ae.Code == api.NotFound {
		return api.Errorf(api.NotFound, "default image %s is not installed and could not be pulled: %s", name, ae.Message).
			WithHint("pull or register an image (banger image pull, banger image register) or pass --image")
	}
	if err != nil {
		return fmt.Errorf("pulling default image %s: %w", name, err)
	}
	return nil
}

// userKey returns the path of the user's ssh key, creating it if needed.
func userKey() (string, error) {
	cfg, _, err := config.Load(dirs().ConfigFile())
	if err != nil {
		return "", err
	}
	path := cfg.SSHKey(dirs())
	if _, err := sshkeys.EnsureUserKey(path); err != nil {
		return "", err
	}
	return path, nil
}

// prepareWorkspace streams ws to dir in the VM, checks out what was asked
// and starts the tooling bootstrap.
func prepareWorkspace(ctx context.Context, c *client.Client, vm string, ws workspace.Set, dir, from, branch string) error {
	if err := uploadWorkspace(ctx, c, vm, ws, dir, os.Getenv("BANGER_WORKSPACE_VIA")); err != nil {
		return fmt.Errorf("copying workspace %s: %w", ws.Root, err)
	}
	if from != "" || branch != "" {
		var out limitedBuffer
		code, err := execQuiet(ctx, c, vm, workspace.CheckoutArgv(dir, from, branch), &out)
		if err != nil {
			return err
		}
		if code != 0 {
			return fmt.Errorf("checking out in %s (exit %d): %s", dir, code, strings.TrimSpace(out.String()))
		}
	}
	if ws.WantsTooling() {
		// Best effort: its failure never fails the run.
		execQuiet(ctx, c, vm, workspace.ToolingArgv(dir, ws.Name), io.Discard)
		fmt.Fprintf(os.Stderr, "tooling: mise bootstrap runs in the background; log in %s\n", workspace.ToolingLog(ws.Name))
	}
	return nil
}

// uploadWorkspace streams ws as a tar to dir in vm. The fast path is the
// guest's own tar over ssh (virtio-net beats the agent's serial channel);
// when sshd does not answer at once (still booting, or none in the image)
// the guest agent extracts it. via forces "ssh" or "agent".
func uploadWorkspace(ctx context.Context, c *client.Client, vm string, ws workspace.Set, dir, via string) error {
	if via != "agent" {
		sc, err := dialSSH(ctx, c, vm, via == "ssh")
		if err == nil {
			defer sc.Close()
			return ws.Send(ctx, func(r io.Reader) error { return workspace.ExtractOverSSH(sc, dir, r) })
		}
		if via == "ssh" {
			return err
		}
	}
	return ws.Send(ctx, func(r io.Reader) error { return c.PutWorkspace(ctx, vm, dir, r) })
}

// dialSSH logs in to vm's sshd with the pinned host key. Unless wait is
// set it tries once, briefly.
func dialSSH(ctx context.Context, c *client.Client, vm string, wait bool) (*ssh.Client, error) {
	keyPath, err := userKey()
	if err != nil {
		return nil, err
	}
	if wait {
		if err := waitSSH(ctx, c, vm, keyPath, time.Now().Add(sshWait)); err != nil {
			return nil, err
		}
	}
	info, err := c.SSHInfo(ctx, vm)
	if err != nil {
		return nil, err
	}
	signer, err := sshkeys.Signer(keyPath)
	if err != nil {
		return nil, err
	}
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return sshkeys.Dial(dctx, net.JoinHostPort(info.IP, strconv.Itoa(info.Port)), info.User, info.HostKey, signer)
}

// execQuiet runs argv in vm with no stdin, its output (both streams) to out.
func execQuiet(ctx context.Context, c *client.Client, vm string, argv []string, out io.Writer) (int, error) {
	e, err := c.OpenExec(ctx, vm, guest.ExecRequest{Argv: argv})
	if err != nil {
		return 0, err
	}
	defer e.Close()
	go e.CopyStdin(eofReader{})
	st, err := e.Wait(out, out)
	return st.Code, err
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }

// limitedBuffer keeps the first 4 KiB written to it.
type limitedBuffer struct{ b []byte }

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := 4096 - len(l.b); room > 0 {
		l.b = append(l.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (l *limitedBuffer) String() string { return string(l.b) }

// ctrlCReader passes a raw terminal's input through and calls detach at
// the second Ctrl-C byte (0x03), which it holds back.
type ctrlCReader struct {
	r      io.Reader
	seen   int
	detach func()
}

func (c *ctrlCReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	for i := 0; i < n; i++ {
		if p[i] != 3 {
			continue
		}
		if c.seen++; c.seen > 1 {
			c.detach()
			return i, err
		}
	}
	return n, err
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// runCommand runs req in vm with this process's stdio, a terminal when
// req asks for one (or, with autoTTY, when stdin is one), and returns the
// exit code. The first Ctrl-C goes to the
// command; a second one detaches (the command is then ended with the
// connection).
func runCommand(ctx context.Context, c *client.Client, vm string, req guest.ExecRequest, autoTTY bool) (int, error) {
	if _, err := unix.IoctlGetTermios(int(os.Stdin.Fd()), unix.TCGETS); err == nil && autoTTY {
		req.TTY = true
	}
	if req.TTY {
		if ws, err := unix.IoctlGetWinsize(int(os.Stdin.Fd()), unix.TIOCGWINSZ); err == nil {
			req.Rows, req.Cols = ws.Row, ws.Col
		}
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGWINCH)
	defer signal.Stop(sigs)
	e, err := c.OpenExec(context.WithoutCancel(ctx), vm, req)
	if err != nil {
		return 0, err
	}
	defer e.Close()
	detached := make(chan struct{})
	var detach sync.Once
	var stdin io.Reader = os.Stdin
	if req.TTY {
		if restore := makeRaw(int(os.Stdin.Fd())); restore != nil {
			defer restore()
			// A raw terminal sends Ctrl-C as a byte, not SIGINT: the
			// first goes to the guest's terminal, a second detaches.
			stdin = &ctrlCReader{r: os.Stdin, detach: func() { detach.Do(func() { close(detached) }) }}
		}
	}
	go e.CopyStdin(stdin)
	go func() {
		interrupts := 0
		for s := range sigs {
			switch s {
			case syscall.SIGWINCH:
				if ws, err := unix.IoctlGetWinsize(int(os.Stdin.Fd()), unix.TIOCGWINSZ); err == nil {
					e.Resize(ws.Row, ws.Col)
				}
			case os.Interrupt:
				interrupts++
				if interrupts > 1 {
					detach.Do(func() { close(detached) })
					return
				}
				e.Signal(syscall.SIGINT)
			default:
				e.Signal(s.(syscall.Signal))
			}
		}
	}()
	type result struct {
		st  guest.ExitStatus
		err error
	}
	done := make(chan result, 1)
	go func() {
		st, err := e.Wait(os.Stdout, os.Stderr)
		done <- result{st, err}
	}()
	select {
	case r := <-done:
		return r.st.Code, r.err
	case <-detached:
		fmt.Fprintf(os.Stderr, "\nbanger: detached from the command in vm %s\n", vm)
		return 130, nil
	}
}
