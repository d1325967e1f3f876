package client

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"

	"banger/internal/api"
	"banger/internal/guest"
)

// ExitNoOpencode is vm acp's exit status when opencode could not be run
// in the guest (not installed, or not executable): a shell's 127.
const ExitNoOpencode = 127

// acpPath is the guest PATH opencode is looked up in: where its installer
// (~/.opencode/bin), npm -g, mise and ~/.local/bin put it, then the
// usual system directories.
const acpPath = "/root/.opencode/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:" +
	"/root/.local/bin:/root/.local/share/mise/shims:/root/.bun/bin"

// ACPOptions says how ACP runs opencode's ACP server in a VM.
type ACPOptions struct {
	// Dir is opencode's working directory in the guest; empty means the
	// VM's workspace, or /root when it has none.
	Dir   string
	Stdio Stdio
	// Signals are passed on to opencode while it runs (SIGWINCH aside):
	// an ACP client that stops banger stops opencode.
	Signals <-chan os.Signal
}

// NoOpencodeError says opencode could not be started in a VM, and how to
// install it.
type NoOpencodeError struct {
	VM     string
	Reason string // the guest's words, e.g. "sh: opencode: not found"
}

func (e *NoOpencodeError) Error() string {
	return fmt.Sprintf("opencode is not installed in vm %s (%s; looked in %s). Install it in the guest, then retry:\n"+
		"  banger vm exec %s -- sh -c 'curl -fsSL https://opencode.ai/install | bash'\n"+
		"or, where node is installed:\n"+
		"  banger vm exec %s -- npm i -g opencode-ai",
		e.VM, e.Reason, acpPath, e.VM, e.VM)
}

// ACP runs `opencode acp` in vm through the guest agent and bridges it to
// o.Stdio byte for byte: stdin frames carry exactly the bytes read, each
// stdout and stderr frame is written out as it comes, with no buffering
// or re-framing. It returns opencode's exit status. When opencode cannot
// be run, it returns a *NoOpencodeError and runs nothing.
func (c *Client) ACP(ctx context.Context, vm string, o ACPOptions) (int, error) {
	dir := o.Dir
	if dir == "" {
		v, err := c.VM(ctx, vm)
		if err != nil {
			return 0, err
		}
		dir = acpDir(v)
	}
	req := guest.ExecRequest{Argv: []string{"opencode", "acp"}, Dir: dir, Env: []string{"PATH=" + acpPath}}
	e, err := c.OpenExec(context.WithoutCancel(ctx), vm, req)
	if err != nil {
		return 0, err
	}
	defer e.Close()
	if e.PID() == 0 {
		// The agent answers a command it could not start like a shell
		// would: a message on stderr and 127 or 126.
		var msg strings.Builder
		st, err := e.Wait(io.Discard, &msg)
		if err != nil {
			return 0, err
		}
		reason := strings.TrimSpace(msg.String())
		if reason == "" {
			reason = fmt.Sprintf("exit status %d", st.Code)
		}
		return ExitNoOpencode, &NoOpencodeError{VM: vm, Reason: reason}
	}
	var stdin io.Reader = eofReader{}
	if o.Stdio.In != nil {
		stdin = o.Stdio.In
	}
	go e.CopyStdin(stdin)
	finished := make(chan struct{})
	defer close(finished)
	go passSignals(e, o.Signals, finished)
	st, err := e.Wait(o.Stdio.Out, o.Stdio.Err)
	return st.Code, err
}

// acpDir is where opencode runs by default: the VM's workspace, else
// root's home.
func acpDir(v api.VM) string {
	if v.Workspace != nil && v.Workspace.GuestPath != "" {
		return v.Workspace.GuestPath
	}
	return "/root"
}

// passSignals forwards each signal of sigs but SIGWINCH (opencode acp
// has no terminal) to e until finished closes.
func passSignals(e *Exec, sigs <-chan os.Signal, finished <-chan struct{}) {
	for {
		select {
		case <-finished:
			return
		case s := <-sigs:
			if sig, ok := s.(syscall.Signal); ok && sig != syscall.SIGWINCH {
				e.Signal(sig)
			}
		}
	}
}
