package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"banger/internal/client"
)

// newVMRunCmds returns vm run, ssh and workspace.
func newVMRunCmds() []*cobra.Command {
	return []*cobra.Command{newVMRunCmd(), newVMSSHCmd(), newVMWorkspaceCmd()}
}

func newVMRunCmd() *cobra.Command {
	var o client.RunOptions
	var memory, disk string
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
deletes the VM once the command ended; by default it is kept.

-p HOST_PORT:GUEST_PORT forwards a host port (on 127.0.0.1 unless another
HOST_ADDR is given) to the guest, e.g. -p 8080:80 for a dev server; see
banger vm port and docs/networking.md.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if n := cmd.ArgsLenAtDash(); n > 1 || (n < 0 && len(args) > 1) {
				return fmt.Errorf("vm run takes at most one PATH before --; put the command after --")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if n := cmd.ArgsLenAtDash(); n >= 0 {
				o.Argv = args[n:]
				args = args[:n]
			}
			if len(args) == 1 {
				o.Path = args[0]
			}
			if err := parseSizes(&o.VM, memory, disk); err != nil {
				return err
			}
			if err := checkPublish(o.VM.Ports); err != nil {
				return err
			}
			if err := checkNet(o.VM.Net); err != nil {
				return err
			}
			var err error
			if o.Config, err = loadConfig(); err != nil {
				return err
			}
			sigs, stop := guestSignals()
			defer stop()
			o.Dirs, o.Via, o.Signals = dirs(), os.Getenv("BANGER_WORKSPACE_VIA"), sigs
			o.Stdio, o.Display = stdio(), newProgress()
			return exitStatus(client.Run(cmd.Context(), o))
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.VM.Name, "name", "", "VM name (default: a generated one)")
	f.StringVar(&o.VM.Image, "image", "", "image to boot (default: default_image_name, pulled when missing)")
	f.StringVar(&o.Branch, "branch", "", "create and check out this branch in the workspace")
	f.StringVar(&o.From, "from", "", "check out this ref (branch, tag, commit) in the workspace")
	f.BoolVar(&o.VM.Cold, "cold", false, "boot the kernel even when the image has a warm snapshot (warm_start)")
	f.BoolVar(&o.Remove, "rm", false, "delete the VM after the command ended (command mode)")
	f.IntVar(&o.VM.ReadyTimeoutSeconds, "ready-timeout", 90, "seconds to wait for the guest's agent and sshd")
	sizeFlags(cmd, &o.VM, &memory, &disk)
	netFlags(cmd, &o.VM)
	publishFlag(cmd, &o.VM.Ports)
	return cmd
}
