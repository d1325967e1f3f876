package main

import (
	"github.com/spf13/cobra"

	"banger/internal/client"
	"banger/internal/guest"
)

func newVMExecCmd() *cobra.Command {
	var req guest.ExecRequest
	cmd := &cobra.Command{
		Use:   "exec VM [--cwd D] [--env K=V] [-t] -- CMD [ARG...]",
		Short: "Run a command in a VM over the guest agent (no sshd needed)",
		Long: `Run a command in a running VM through banger's guest agent. Its stdout and
stderr stream separately, stdin is passed through, and banger exits with
the command's status (128+N when it died of signal N, 127 when it was not
found). Ctrl-C is forwarded to the command; a second Ctrl-C detaches.
-t gives the command a terminal.`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Argv = args[1:]
			sigs, stop := guestSignals()
			defer stop()
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			return exitStatus(c.RunCommand(cmd.Context(), args[0], client.CommandOptions{Req: req, Stdio: stdio(), Signals: sigs}))
		},
	}
	cmd.Flags().StringVar(&req.Dir, "cwd", "", "working directory in the guest (default: /root)")
	cmd.Flags().StringArrayVar(&req.Env, "env", nil, "environment variable K=V (repeatable)")
	cmd.Flags().BoolVarP(&req.TTY, "tty", "t", false, "allocate a terminal")
	return cmd
}
