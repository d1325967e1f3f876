package client

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"banger/internal/api"
	"banger/internal/config"
	"banger/internal/guest"
	"banger/internal/workspace"
)

// RunOptions is one vm run: the VM to make, the workspace to copy into it
// and the command to run there; without a command, an interactive ssh
// session.
type RunOptions struct {
	// VM is the VM to create. An empty Image is the config's
	// default_image_name, pulled when missing.
	VM api.CreateVMRequest
	// Path is the workspace on the host, "" for none. From and Branch
	// check out a ref in it, or create a branch.
	Path, From, Branch string
	// Argv is the command; none opens an ssh session.
	Argv []string
	// Remove deletes the VM once the command ended.
	Remove bool
	// Via forces the workspace's transport ("ssh" or "agent").
	Via string
	// Config is the loaded config.toml (read once per command), Dirs
	// banger's directories: the daemon to use, the ssh key, the log to
	// point to.
	Config config.Config
	Dirs   config.Dirs
	Stdio  Stdio
	// Display shows the steps (pull, create, wait for sshd).
	Display Display
	// Signals are forwarded to the command (see CommandOptions).
	Signals <-chan os.Signal
}

// Run creates and starts a VM, waits until it is ready, copies the
// workspace into /root/<name>, then runs the command there (returning
// its exit status: 128+N for signal N, 127 when not found) or opens an
// ssh session (returning ssh's status; the VM keeps running). It checks
// its input, then connects to the daemon of o.Dirs, starting it when
// needed.
func Run(ctx context.Context, o RunOptions) (int, error) {
	if (o.Branch != "" || o.From != "") && o.Path == "" {
		return 0, fmt.Errorf("--branch and --from need a workspace PATH")
	}
	var ws workspace.Set
	if o.Path != "" {
		var err error
		if ws, err = CollectWorkspace(ctx, o.Path); err != nil {
			return 0, err
		}
		if (o.Branch != "" || o.From != "") && !ws.Git {
			return 0, fmt.Errorf("--branch and --from need a git repository, and %s is not one", o.Path)
		}
	}
	keys, err := UserKeys(o.Config, o.Dirs)
	if err != nil {
		return 0, err
	}
	c, err := Ensure(ctx, o.Dirs)
	if err != nil {
		return 0, err
	}
	if o.VM.Image == "" {
		if err := c.ensureImage(ctx, o.Config.DefaultImageName, o); err != nil {
			return 0, err
		}
	}
	deadline := time.Now().Add(time.Duration(o.VM.ReadyTimeoutSeconds) * time.Second)
	vm, err := c.createForRun(ctx, o)
	if err != nil {
		return 0, err
	}
	g := &guestSSH{c: c, vm: vm.Name, keys: keys}
	cwd := "/root"
	if o.Path != "" {
		cwd = workspace.GuestDir(ws.Name)
		wo := WorkspaceOptions{Dir: cwd, From: o.From, Branch: o.Branch, Via: o.Via, Keys: keys,
			Stderr: o.Stdio.Err, Display: o.Display}
		if err := prepareWorkspace(ctx, g, ws, wo); err != nil {
			if o.Remove && len(o.Argv) > 0 {
				c.DeleteVM(context.WithoutCancel(ctx), vm.Name, true)
				return 0, err
			}
			return 0, fmt.Errorf("%w (the VM %s is still running; remove it with banger vm delete %s)", err, vm.Name, vm.Name)
		}
	}
	if len(o.Argv) > 0 {
		return c.commandMode(ctx, vm.Name, o, guest.ExecRequest{Argv: o.Argv, Dir: cwd})
	}
	return bareMode(ctx, g, o, cwd, deadline)
}

// createForRun creates the VM, saying where to look when the daemon
// went away meanwhile.
func (c *Client) createForRun(ctx context.Context, o RunOptions) (api.VM, error) {
	p, done := step(o.Display)
	vm, err := c.CreateVM(ctx, o.VM, p)
	done()
	var ae *api.Error
	switch {
	case err == nil:
		return vm, nil
	case errors.As(err, &ae), ctx.Err() != nil:
		return api.VM{}, err
	}
	return api.VM{}, fmt.Errorf("%w (bangerd went away while making the VM; banger vm list shows what is left and %s says why)",
		err, filepath.Join(o.Dirs.State, "bangerd.log"))
}

// commandMode runs req in vm, deletes vm when o.Remove is set, and
// returns the command's status.
func (c *Client) commandMode(ctx context.Context, vm string, o RunOptions, req guest.ExecRequest) (int, error) {
	code, err := c.RunCommand(ctx, vm, CommandOptions{Req: req, AutoTTY: true, Stdio: o.Stdio, Signals: o.Signals})
	if o.Remove {
		if derr := c.DeleteVM(context.WithoutCancel(ctx), vm, true); derr != nil && err == nil {
			err = fmt.Errorf("deleting vm %s: %w", vm, derr)
		}
	}
	return code, err
}

// bareMode waits for sshd and opens an interactive session, in dir when
// there is a workspace. The VM keeps running afterwards; leaving the
// session with Ctrl-C (130) is not a failure.
func bareMode(ctx context.Context, g *guestSSH, o RunOptions, dir string, deadline time.Time) (int, error) {
	if err := g.wait(ctx, deadline, o.Display); err != nil {
		return 0, err
	}
	var remote []string
	if o.Path != "" {
		remote = []string{"cd " + shellQuote(dir) + " && exec \"$SHELL\" -l"}
	}
	code, err := g.session(ctx, remote, true, o.Stdio)
	fmt.Fprintf(o.Stdio.errOut(), "\nVM %s is still running: get back in with banger vm ssh %s; remove it with banger vm delete %s\n",
		g.vm, g.vm, g.vm)
	if err != nil || code == 130 {
		return 0, err
	}
	return code, nil
}

// ensureImage pulls the default image name when it is missing. A named
// image that does not exist is left for the daemon to report with the
// valid names.
func (c *Client) ensureImage(ctx context.Context, name string, o RunOptions) error {
	_, err := c.Image(ctx, name)
	var ae *api.Error
	if err == nil || !errors.As(err, &ae) || ae.Code != api.NotFound {
		return err
	}
	fmt.Fprintf(o.Stdio.errOut(), "image %s is not here yet; pulling it\n", name)
	p, done := step(o.Display)
	_, err = c.PullImage(ctx, api.PullImageRequest{Ref: name}, p)
	done()
	if errors.As(err, &ae) && ae.Code == api.NotFound {
		return api.Errorf(api.NotFound, "default image %s is not installed and could not be pulled: %s", name, ae.Message).
			WithHint("pull or register an image (banger image pull, banger image register) or pass --image")
	}
	if err != nil {
		return fmt.Errorf("pulling default image %s: %w", name, err)
	}
	return nil
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
