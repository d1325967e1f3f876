package client

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"banger/internal/api"
	"banger/internal/workspace"
)

// PutWorkspace extracts the tar stream r under guestDir in the VM. Modes,
// symlinks and mtimes in the stream are kept.
func (c *Client) PutWorkspace(ctx context.Context, vm, guestDir string, r io.Reader) error {
	q := url.Values{"dir": {guestDir}}
	return c.put(ctx, path("vms", vm, "workspace")+"?"+q.Encode(), "application/x-tar", r)
}

// GetWorkspace returns a tar stream of guestDir in the VM. A stream that
// breaks off (the guest's tar failed) ends in an error, not in a short
// archive that looks whole.
func (c *Client) GetWorkspace(ctx context.Context, vm, guestDir string) (io.ReadCloser, error) {
	q := url.Values{"dir": {guestDir}}
	return c.Raw(ctx, http.MethodGet, path("vms", vm, "workspace")+"?"+q.Encode())
}

// CollectWorkspace lists the workspace at path (for a git repository the
// files git ls-files -co --exclude-standard lists, plus .git) and checks
// that each can be read, before anything is sent.
func CollectWorkspace(ctx context.Context, path string) (workspace.Set, error) {
	ws, err := workspace.Collect(ctx, path)
	if err != nil {
		return workspace.Set{}, err
	}
	if err := ws.CheckReadable(); err != nil {
		return workspace.Set{}, err
	}
	return ws, nil
}

// WorkspaceOptions says where and how PrepareWorkspace copies a workspace.
type WorkspaceOptions struct {
	// Dir is the directory in the guest.
	Dir string
	// From checks out a ref; Branch creates a branch and switches to it.
	From, Branch string
	// Via forces the transport: "ssh" or "agent"; "" tries ssh once,
	// briefly, then falls back to the agent.
	Via  string
	Keys SSHKeys
	// Stderr gets notes (the tooling bootstrap's log), Display the wait
	// for sshd when Via is "ssh".
	Stderr  io.Writer
	Display Display
}

// PrepareWorkspace streams ws to o.Dir in vm, checks out what was asked
// and starts the tooling bootstrap.
func (c *Client) PrepareWorkspace(ctx context.Context, vm string, ws workspace.Set, o WorkspaceOptions) error {
	return prepareWorkspace(ctx, &guestSSH{c: c, vm: vm, keys: o.Keys}, ws, o)
}

func prepareWorkspace(ctx context.Context, g *guestSSH, ws workspace.Set, o WorkspaceOptions) error {
	if err := uploadWorkspace(ctx, g, ws, o); err != nil {
		return fmt.Errorf("copying workspace %s: %w", ws.Root, err)
	}
	if o.From != "" || o.Branch != "" {
		var out limitedBuffer
		code, err := g.c.execQuiet(ctx, g.vm, workspace.CheckoutArgv(o.Dir, o.From, o.Branch), &out)
		if err != nil {
			return err
		}
		if code != 0 {
			return fmt.Errorf("checking out in %s (exit %d): %s", o.Dir, code, strings.TrimSpace(out.String()))
		}
	}
	if err := g.c.SetWorkspaceSource(ctx, g.vm, source(ctx, ws, o.Dir)); err != nil {
		return fmt.Errorf("recording where the workspace of vm %s came from: %w", g.vm, err)
	}
	if ws.WantsTooling() {
		// Best effort: its failure never fails the run.
		g.c.execQuiet(ctx, g.vm, workspace.ToolingArgv(o.Dir, ws.Name), io.Discard)
		if o.Stderr != nil {
			fmt.Fprintf(o.Stderr, "tooling: mise bootstrap runs in the background; log in %s\n", workspace.ToolingLog(ws.Name))
		}
	}
	return nil
}

// SetWorkspaceSource records where vm's workspace came from: vm inspect
// shows it and vm workspace pull fetches back into it.
func (c *Client) SetWorkspaceSource(ctx context.Context, vm string, src api.WorkspaceSource) error {
	return c.Do(ctx, http.MethodPut, path("vms", vm, "workspace", "source"), src, nil)
}

// source is where ws came from, copied to guestDir: for a git
// repository with the branch and commit checked out on the host.
func source(ctx context.Context, ws workspace.Set, guestDir string) api.WorkspaceSource {
	src := api.WorkspaceSource{HostPath: ws.Root, GuestPath: guestDir}
	if ws.Git {
		src.Branch, src.Commit = workspace.Head(ctx, ws.Root)
	}
	return src
}

// uploadWorkspace streams ws as a tar to o.Dir in the VM. The fast path is
// the guest's own tar over ssh (virtio-net beats the agent's serial
// channel); when sshd does not answer at once (still booting, or none in
// the image) the guest agent extracts it.
func uploadWorkspace(ctx context.Context, g *guestSSH, ws workspace.Set, o WorkspaceOptions) error {
	if o.Via != "agent" {
		sc, err := dialWorkspaceSSH(ctx, g, o)
		if err == nil {
			defer sc.Close()
			return ws.Send(ctx, func(r io.Reader) error { return workspace.ExtractOverSSH(sc, o.Dir, r) })
		}
		if o.Via == "ssh" {
			return err
		}
	}
	return ws.Send(ctx, func(r io.Reader) error { return g.c.PutWorkspace(ctx, g.vm, o.Dir, r) })
}

// dialWorkspaceSSH logs in for the upload: with Via "ssh" after waiting
// for sshd, else with one brief try.
func dialWorkspaceSSH(ctx context.Context, g *guestSSH, o WorkspaceOptions) (*ssh.Client, error) {
	if o.Via == "ssh" {
		if err := g.wait(ctx, time.Now().Add(SSHWait), o.Display); err != nil {
			return nil, err
		}
	}
	return g.dial(ctx)
}

// ExportWorkspace copies guestDir of vm into hostDir (created when
// missing). Modes are kept less the umask; entries that would land
// outside hostDir are refused.
func (c *Client) ExportWorkspace(ctx context.Context, vm, guestDir, hostDir string) error {
	rc, err := c.GetWorkspace(ctx, vm, guestDir)
	if err != nil {
		return err
	}
	defer rc.Close()
	if err := workspace.Extract(ctx, rc, hostDir); err != nil {
		return fmt.Errorf("exporting %s from vm %s: %w", guestDir, vm, err)
	}
	return nil
}
