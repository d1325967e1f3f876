package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"banger/internal/api"
	"banger/internal/client"
)

func newVMSessionCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "session",
		Short: "Long-lived guest commands that outlive the CLI: start, attach, logs, stop",
		Long: `A session is a command the guest agent runs for as long as it lives, with no
client attached: a coding agent, a dev server, a build. bangerd keeps its
output (in the guest, and a capped copy on the host: session_log_max_mib),
and serves a Unix socket per running session that any host tool can open
(plain bytes: what you write goes to its stdin, its stdout comes back).
See docs/sessions.md.`,
	}
	cmd.AddCommand(newSessionStartCmd(), newSessionListCmd(), newSessionAttachCmd(), newSessionLogsCmd(), newSessionStopCmd())
	return cmd
}

func newSessionStartCmd() *cobra.Command {
	var req api.StartSessionRequest
	cmd := &cobra.Command{
		Use:   "start VM --name S [--cwd D] [--env K=V]... [--stdin-mode pipe|tty|null] -- CMD [ARG...]",
		Short: "Start a session in a running VM",
		Long: `Start CMD in VM as session S and return at once; it goes on with no client
attached. --stdin-mode pipe (the default) gives it a stdin that attached
clients write to; tty runs it on a terminal (attach from a terminal, resize
follows the window); null gives it /dev/null. The name of a session that
has ended can be used again (its record and logs are replaced); the name of
a running one cannot.`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Argv = args[1:]
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			s, err := c.StartSession(cmd.Context(), args[0], req)
			if err != nil {
				return err
			}
			fmt.Printf("session %s started in vm %s (pid %d)\nsocket: %s\n", s.Name, s.VM, s.PID, s.Socket)
			return nil
		},
	}
	cmd.Flags().StringVar(&req.Name, "name", "", "session name (letters, digits, '.', '_', '-')")
	cmd.Flags().StringVar(&req.Dir, "cwd", "", "working directory in the guest (default: /root)")
	cmd.Flags().StringArrayVar(&req.Env, "env", nil, "environment variable K=V (repeatable)")
	cmd.Flags().StringVar(&req.StdinMode, "stdin-mode", "pipe", "pipe, tty or null")
	cmd.MarkFlagRequired("name")
	return cmd
}

func newSessionListCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use: "list VM [--json]", Aliases: []string{"ls"}, Short: "List a VM's sessions", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			list, err := c.Sessions(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(list)
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tSTATE\tPID\tEXIT\tSTARTED\tATTACHED\tSOCKET\tCOMMAND")
			for _, s := range list {
				exit := "-"
				if s.ExitCode != nil {
					exit = strconv.Itoa(*s.ExitCode)
				}
				state := s.State
				if s.Reason != "" {
					state += " (" + s.Reason + ")"
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s ago\t%d\t%s\t%s\n", s.Name, state, s.PID, exit, age(s.StartedAt),
					s.Attached, dash(s.Socket), strings.Join(s.Argv, " "))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			for _, s := range list {
				warnSession(s)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newSessionAttachCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "attach VM S",
		Short: "Connect your terminal or stdio to a running session",
		Long: `Bridge this terminal (tty sessions) or stdin/stdout/stderr (pipe and null
sessions) to session S. Several clients can attach at once: each sees the
output produced while it is attached, and their input interleaves.

Detach with Ctrl-] on a terminal, or by closing stdin (EOF) or Ctrl-C in
pipe mode: the session goes on (on a tty session Ctrl-C reaches it). When the session ends while attached, banger exits
with its exit code. Earlier output is in banger vm session logs.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			sigs, stop := guestSignals()
			defer stop()
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			code, err := c.AttachSession(cmd.Context(), args[0], args[1], client.AttachOptions{Stdio: stdio(), Signals: sigs})
			if errors.Is(err, client.ErrDetached) {
				return nil
			}
			if err == nil && code != 0 {
				fmt.Fprintf(os.Stderr, "banger: session %s exited with code %d\n", args[1], code)
			}
			return exitStatus(code, err)
		},
	}
}

func newSessionLogsCmd() *cobra.Command {
	var stream string
	var follow bool
	cmd := &cobra.Command{
		Use:   "logs VM S [--stream stdout|stderr] [--follow]",
		Short: "Print a session's output",
		Long: `Print the host's copy of session S's output: its stdout to stdout and its
stderr to stderr, or only the --stream given (to stdout). The copy is capped at
session_log_max_mib per stream (the oldest output goes first) and outlives
the session, a detach and a daemon restart. --follow keeps printing until
the session ends.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			streams := map[string]io.Writer{"stdout": os.Stdout, "stderr": os.Stderr}
			if stream != "" {
				if _, ok := streams[stream]; !ok {
					return fmt.Errorf("--stream %q: want stdout or stderr", stream)
				}
				// One stream asked for goes to stdout, to pipe it on.
				streams = map[string]io.Writer{stream: os.Stdout}
			}
			var wg sync.WaitGroup
			errs := make(chan error, 2)
			for name, w := range streams {
				rc, err := c.SessionLogs(cmd.Context(), args[0], args[1], name, false, follow)
				if err != nil {
					return err
				}
				wg.Go(func() {
					defer rc.Close()
					if _, err := io.Copy(w, rc); err != nil && cmd.Context().Err() == nil {
						errs <- err
					}
				})
			}
			wg.Wait()
			close(errs)
			if err := <-errs; err != nil {
				return err
			}
			// The copy may be behind the guest (a full disk): say so.
			if s, err := c.Session(cmd.Context(), args[0], args[1]); err == nil {
				warnSession(s)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&stream, "stream", "", "only this stream: stdout or stderr")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing until the session ends")
	return cmd
}

func newSessionStopCmd() *cobra.Command {
	var sig string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "stop VM S [--signal SIG] [--timeout T]",
		Short: "Stop a session: a signal, then SIGKILL after the timeout",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := parseSignal(sig)
			if err != nil {
				return err
			}
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			s, err := c.StopSession(cmd.Context(), args[0], args[1],
				api.StopSessionRequest{Signal: n, TimeoutSeconds: int((timeout + time.Second - 1) / time.Second)})
			if err != nil {
				return err
			}
			if s.ExitCode != nil {
				fmt.Printf("session %s %s with code %d\n", s.Name, s.State, *s.ExitCode)
			} else {
				fmt.Printf("session %s %s\n", s.Name, s.State)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&sig, "signal", "TERM", "signal to send first: a name (TERM, INT, HUP, ...) or a number")
	cmd.Flags().DurationVar(&timeout, "timeout", 10*time.Second, "how long to wait before SIGKILL")
	return cmd
}

// parseSignal reads a signal name (TERM, SIGTERM) or number.
func parseSignal(s string) (int, error) {
	if n, err := strconv.Atoi(s); err == nil && n >= 1 && n <= 64 {
		return n, nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if n := unix.SignalNum(name); n != 0 {
		return int(n), nil
	}
	return 0, fmt.Errorf("--signal %q: not a signal name (TERM, INT, HUP, KILL, ...) or number from 1 to 64", s)
}

// warnSession prints why s's host copy of its output is behind, if it is.
func warnSession(s api.Session) {
	if s.Warning != "" {
		fmt.Fprintf(os.Stderr, "warning: session %s of vm %s: %s\n", s.Name, s.VM, s.Warning)
	}
}
