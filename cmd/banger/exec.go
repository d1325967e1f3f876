package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

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
found). Ctrl-C is forwarded to the command.`,
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

// runExec runs req in vm with this process's stdio and returns the exit
// code.
func runExec(cmd *cobra.Command, vm string, req guest.ExecRequest) (int, error) {
	ctx := cmd.Context()
	c, err := connect(ctx)
	if err != nil {
		return 0, err
	}
	var restore func()
	if req.TTY {
		if ws, err := unix.IoctlGetWinsize(int(os.Stdout.Fd()), unix.TIOCGWINSZ); err == nil {
			req.Rows, req.Cols = ws.Row, ws.Col
		}
		restore = makeRaw(int(os.Stdin.Fd()))
	}
	if restore != nil {
		defer restore()
	}
	// Ctrl-C goes to the guest command, not to us.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGWINCH)
	defer signal.Stop(sigs)

	e, err := c.OpenExec(context.WithoutCancel(ctx), vm, req)
	if err != nil {
		return 0, err
	}
	defer e.Close()
	go e.CopyStdin(os.Stdin)
	go func() {
		for s := range sigs {
			switch s {
			case syscall.SIGWINCH:
				if ws, err := unix.IoctlGetWinsize(int(os.Stdout.Fd()), unix.TIOCGWINSZ); err == nil {
					e.Resize(ws.Row, ws.Col)
				}
			default:
				e.Signal(s.(syscall.Signal))
			}
		}
	}()
	st, err := e.Wait(os.Stdout, os.Stderr)
	if err != nil {
		return 0, err
	}
	return st.Code, nil
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
