package main

import (
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

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
			code, err := runExec(cmd, args[0], req)
			if err != nil {
				return err
			}
			if code != 0 {
				return &exitError{code: code}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&req.Dir, "cwd", "", "working directory in the guest (default: /root)")
	cmd.Flags().StringArrayVar(&req.Env, "env", nil, "environment variable K=V (repeatable)")
	cmd.Flags().BoolVarP(&req.TTY, "tty", "t", false, "allocate a terminal")
	return cmd
}

// runExec runs req in vm with this process's stdio, as vm run's command
// mode does, and returns the exit code.
func runExec(cmd *cobra.Command, vm string, req guest.ExecRequest) (int, error) {
	c, err := connect(cmd.Context())
	if err != nil {
		return 0, err
	}
	return runCommand(cmd.Context(), c, vm, req, false)
}

// makeRaw puts the terminal fd into raw mode and returns the restore
// function, or nil when fd is not a terminal.
func makeRaw(fd int) func() {
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil
	}
	raw := *old
	raw.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	raw.Oflag &^= unix.OPOST
	raw.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	raw.Cflag &^= unix.CSIZE | unix.PARENB
	raw.Cflag |= unix.CS8
	raw.Cc[unix.VMIN], raw.Cc[unix.VTIME] = 1, 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &raw); err != nil {
		return nil
	}
	return func() { unix.IoctlSetTermios(fd, unix.TCSETS, old) }
}
