package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"banger/internal/client"
	"banger/internal/workspace"
)

func newVMWorkspaceCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "workspace", Short: "Copy a workspace into a running VM, and the work back out"}
	var guestPath, out string
	prepare := &cobra.Command{
		Use:   "prepare VM PATH [--guest-path P]",
		Short: "Copy a workspace into a running VM",
		Long: `Copy PATH into a running VM as vm run does: for a git repository the files
git ls-files -co --exclude-standard lists plus .git; any other directory as it
is. The default guest path is /root/<name of PATH>. The tar stream goes over
ssh when the VM's sshd answers, else through the guest agent
(BANGER_WORKSPACE_VIA=ssh or agent forces one).`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			ws, err := client.CollectWorkspace(ctx, args[1])
			if err != nil {
				return err
			}
			keys, err := userKeys()
			if err != nil {
				return err
			}
			c, err := connect(ctx)
			if err != nil {
				return err
			}
			o := client.WorkspaceOptions{Dir: guestPath, Via: os.Getenv("BANGER_WORKSPACE_VIA"), Keys: keys,
				Stderr: os.Stderr, Display: newProgress()}
			if o.Dir == "" {
				o.Dir = workspace.GuestDir(ws.Name)
			}
			if err := c.PrepareWorkspace(ctx, args[0], ws, o); err != nil {
				return err
			}
			cmd.Println(o.Dir)
			return nil
		},
	}
	prepare.Flags().StringVar(&guestPath, "guest-path", "", "directory in the guest (default /root/<name>)")
	export := &cobra.Command{
		Use:   "export VM --guest-path P -o DIR",
		Short: "Copy a directory of a running VM back to the host",
		Long: `Copy the guest directory P into DIR on the host (created when missing),
replacing files that exist there. Entries that would land outside DIR are
refused. Modes are kept less your umask, so the guest cannot leave
world-writable or setuid files on the host. Symlinks are copied as they
are: one may point anywhere on the host (extraction never follows it, but
whatever reads DIR later might), so treat an exported tree like any
download.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			if err := c.ExportWorkspace(cmd.Context(), args[0], guestPath, out); err != nil {
				return err
			}
			cmd.Println(out)
			return nil
		},
	}
	export.Flags().StringVar(&guestPath, "guest-path", "", "directory in the guest")
	export.Flags().StringVarP(&out, "output", "o", "", "host directory to write into")
	export.MarkFlagRequired("guest-path")
	export.MarkFlagRequired("output")
	cmd.AddCommand(prepare, export, newVMWorkspacePullCmd())
	return cmd
}

func newVMWorkspacePullCmd() *cobra.Command {
	var o client.PullOptions
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "pull VM [PATH] [--branch B] [--force] [--include-uncommitted]",
		Short: "Fetch the commits made in a VM's workspace into a host branch",
		Long: `Fetch the commits made in the VM's copy of a git repository into the host
repository at PATH as branch B. PATH defaults to the repository the VM's
workspace was copied from (vm run PATH or vm workspace prepare; vm inspect
shows it), B to banger/<VM>. The guest repository is where that workspace
was copied (--guest-path to pick another).

Your work tree, index and checked-out branch are not touched: the guest's
git bundles the commits the host repository does not have, and the host's
git fetches the bundle into B (never into a checked-out branch). Merge or
cherry-pick from B when you like.

A branch B that exists is refused unless --force, which moves it. The
guest's uncommitted changes are listed and left out; --include-uncommitted
adds them (untracked files too, ignored ones not) as one more commit on
B, made through a temporary index, so the guest's work tree, index and
branches stay as they are. With no commit beyond what the host has,
nothing is made and the command fails. Needs git in the guest and on the
host; the VM must be running.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 2 {
				o.Path = args[1]
			}
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			res, err := c.PullWorkspace(cmd.Context(), args[0], o)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(res)
			}
			printPull(cmd, args[0], res)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Branch, "branch", "", "host branch to fetch into (default banger/<VM>)")
	f.BoolVar(&o.Force, "force", false, "move the branch when it exists")
	f.BoolVar(&o.IncludeUncommitted, "include-uncommitted", false, "add the guest's uncommitted changes as one more commit")
	f.StringVar(&o.GuestPath, "guest-path", "", "repository in the guest (default: where the workspace was copied, else /root/<name of PATH>)")
	f.BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

// printPull says what a pull did on stdout and, on stderr, which
// uncommitted guest changes it left out.
func printPull(cmd *cobra.Command, vm string, r client.PullResult) {
	verb := "created"
	if r.Previous != "" {
		verb = "moved from " + shortID(r.Previous)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "branch %s of %s (%s) is at %s: %d commit(s) from %s in vm %s\n",
		r.Branch, r.Repo, verb, shortID(r.Commit), r.Commits, r.GuestPath, vm)
	if r.IncludedUncommitted {
		fmt.Fprintf(cmd.OutOrStdout(), "the last commit holds the guest's %d uncommitted change(s)\n", len(r.Uncommitted))
		return
	}
	if len(r.Uncommitted) == 0 {
		return
	}
	errw := cmd.ErrOrStderr()
	fmt.Fprintf(errw, "vm %s has %d uncommitted change(s) in %s, not pulled (--include-uncommitted adds them as one more commit):\n",
		vm, len(r.Uncommitted), r.GuestPath)
	const show = 20
	for i, l := range r.Uncommitted {
		if i == show {
			fmt.Fprintf(errw, "  ... and %d more\n", len(r.Uncommitted)-show)
			break
		}
		fmt.Fprintf(errw, "  %s\n", l)
	}
}

func shortID(commit string) string {
	if len(commit) > 12 {
		return commit[:12]
	}
	return commit
}
