package main

import (
	"os"

	"github.com/spf13/cobra"

	"banger/internal/client"
	"banger/internal/workspace"
)

func newVMWorkspaceCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "workspace", Short: "Copy a workspace into a running VM and back"}
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
	cmd.AddCommand(prepare, export)
	return cmd
}
