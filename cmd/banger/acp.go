package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"banger/internal/client"
)

func newVMACPCmd() *cobra.Command {
	var o client.ACPOptions
	cmd := &cobra.Command{
		Use:   "acp VM [--cwd D]",
		Short: "Bridge stdio to opencode's ACP server in a VM (for editors and ACP clients)",
		Long: `Run "opencode acp" in a running VM and bridge this process's stdin and
stdout to it byte for byte, through banger's guest agent (no sshd needed):
no line buffering, no re-framing, so an ACP client (an editor) can use
"banger vm acp VM" as its agent command. opencode's stderr is passed to
stderr, and banger exits with opencode's status. SIGINT, SIGTERM and
SIGHUP are passed on to opencode.

opencode runs in --cwd, by default the VM's workspace (vm run PATH) or
/root. When opencode is not installed in the guest, banger says how to
install it and exits 127 without running anything. See docs/agents.md.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			sigs := make(chan os.Signal, 4)
			signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
			defer signal.Stop(sigs)
			o.Signals, o.Stdio = sigs, stdio()
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			code, err := c.ACP(cmd.Context(), args[0], o)
			if ne := (*client.NoOpencodeError)(nil); errors.As(err, &ne) {
				fmt.Fprintln(os.Stderr, "banger:", err)
				return &exitError{code: code}
			}
			return exitStatus(code, err)
		},
	}
	cmd.Flags().StringVar(&o.Dir, "cwd", "", "opencode's working directory in the guest (default: the VM's workspace, else /root)")
	return cmd
}
