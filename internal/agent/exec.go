package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"banger/internal/guest"
)

// defaultPath is PATH when the request does not set one.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// outputGrace is how long output is still forwarded after the process
// exited, for children that inherited its stdout or stderr.
const outputGrace = 2 * time.Second

// process is one exec'd command and its plumbing.
type process struct {
	cmd    *exec.Cmd
	pid    int
	tty    *os.File   // pty master in tty mode
	stdin  *os.File   // write end of stdin (the pty master in tty mode)
	output []*os.File // read ends to forward, in frame-type order
}

// exec runs one OpExec stream.
func (s *Server) exec(ctx context.Context, conn net.Conn, fw *guest.FrameWriter, req *guest.ExecRequest) error {
	if len(req.Argv) == 0 {
		return fw.WriteError(invalid("exec: empty argv"))
	}
	cmd, err := newCommand(req.Argv, req.Env, req.Dir, req.TTY)
	var ce *commandError
	if errors.As(err, &ce) {
		return notRun(fw, req.TTY, ce.code, ce.msg)
	} else if err != nil {
		return fw.WriteError(err)
	}
	p, err := s.startCommand(cmd, procSpec{tty: req.TTY, rows: req.Rows, cols: req.Cols})
	if errors.As(err, &ce) {
		return notRun(fw, req.TTY, ce.code, ce.msg)
	} else if err != nil {
		return fw.WriteError(err)
	}
	defer s.procs.forget(p.pid)
	if err := fw.WriteJSON(guest.FrameResponse, guest.Response{PID: p.pid}); err != nil {
		_ = unix.Kill(-p.pid, unix.SIGKILL)
		_ = p.cmd.Wait()
		return err
	}
	return s.runProcess(conn, fw, p)
}

// commandError is a command that cannot run, as a shell would report it:
// an exit code (127 not found, 126 not executable) and a message.
type commandError struct {
	code int
	msg  string
}

func (e *commandError) Error() string { return e.msg }

// newCommand resolves argv the way exec runs it: root's environment plus
// extraEnv, the working directory dir (empty: root's home, else /), the
// program looked up like a shell does. A missing or unusable working
// directory is a *guest.RemoteError, a program not found or not
// executable a *commandError.
func newCommand(argv, extraEnv []string, dir string, tty bool) (*exec.Cmd, error) {
	env := execEnv(extraEnv, tty)
	if dir == "" {
		dir = envValue(env, "HOME")
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			dir = "/"
		}
	}
	if st, err := os.Stat(dir); err != nil {
		return nil, &guest.RemoteError{Kind: guest.KindNotExist,
			Message: fmt.Sprintf("working directory %s does not exist in the guest", dir)}
	} else if !st.IsDir() {
		return nil, invalid("working directory %s is not a directory", dir)
	}
	path, code, msg := lookPath(argv[0], dir, envValue(env, "PATH"))
	if code != 0 {
		return nil, &commandError{code: code, msg: msg}
	}
	return &exec.Cmd{Path: path, Args: argv, Env: env, Dir: dir}, nil
}

// startCommand starts cmd with startProcess. Like a shell, it runs a file
// without #! or ELF header as a /bin/sh script. A program that cannot be
// executed is a *commandError.
func (s *Server) startCommand(cmd *exec.Cmd, spec procSpec) (*process, error) {
	p, err := s.startProcess(cmd, spec)
	if errors.Is(err, unix.ENOEXEC) {
		cmd = &exec.Cmd{Path: "/bin/sh", Args: append([]string{"sh", cmd.Path}, cmd.Args[1:]...), Env: cmd.Env, Dir: cmd.Dir}
		p, err = s.startProcess(cmd, spec)
	}
	if err != nil {
		code := 126
		if errors.Is(err, fs.ErrNotExist) {
			code = 127
		}
		return nil, &commandError{code: code, msg: fmt.Sprintf("sh: %s: %v", cmd.Args[0], unwrapPathError(err))}
	}
	return p, nil
}

// notRun reports a command that could not start the way a shell would:
// a message on stderr and an exit status.
func notRun(fw *guest.FrameWriter, tty bool, code int, msg string) error {
	if err := fw.WriteJSON(guest.FrameResponse, guest.Response{}); err != nil {
		return err
	}
	t := guest.FrameStderr
	if tty {
		t = guest.FrameStdout
		msg = strings.ReplaceAll(msg, "\n", "\r\n")
	}
	if err := fw.WriteFrame(t, []byte(msg+"\n")); err != nil {
		return err
	}
	return fw.WriteJSON(guest.FrameExit, guest.ExitStatus{Code: code})
}

func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// procSpec says how startProcess wires a process's stdio.
type procSpec struct {
	tty        bool   // a pty for stdin, stdout and stderr
	rows, cols uint16 // its initial size (0: 24x80)
	nullStdin  bool   // without tty: stdin is /dev/null rather than a pipe
}

// startProcess starts cmd in its own process group (its own session with
// a controlling terminal in tty mode).
func (s *Server) startProcess(cmd *exec.Cmd, spec procSpec) (*process, error) {
	p := &process{cmd: cmd}
	var err error
	if spec.tty {
		ws := &pty.Winsize{Rows: spec.rows, Cols: spec.cols}
		if ws.Rows == 0 || ws.Cols == 0 {
			ws.Rows, ws.Cols = 24, 80
		}
		p.pid, err = s.procs.start(func() (int, error) {
			master, err := pty.StartWithAttrs(cmd, ws, &syscall.SysProcAttr{Setsid: true, Setctty: true})
			if err != nil {
				return 0, err
			}
			p.tty, p.stdin, p.output = master, master, []*os.File{master}
			return cmd.Process.Pid, nil
		})
		return p, err
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var child []*os.File
	defer func() {
		for _, f := range child {
			f.Close()
		}
	}()
	pipes := make([][2]*os.File, 3)
	for i := range pipes {
		if i == 0 && spec.nullStdin {
			continue
		}
		r, w, err := os.Pipe()
		if err != nil {
			for _, pp := range pipes[:i] {
				closeFiles(pp[:])
			}
			return nil, fmt.Errorf("creating pipe: %w", err)
		}
		pipes[i] = [2]*os.File{r, w}
	}
	if spec.nullStdin {
		null, err := os.Open(os.DevNull)
		if err != nil {
			closeFiles(pipes[1][:])
			closeFiles(pipes[2][:])
			return nil, err
		}
		cmd.Stdin = null
	} else {
		cmd.Stdin, p.stdin = pipes[0][0], pipes[0][1]
	}
	cmd.Stdout, cmd.Stderr = pipes[1][1], pipes[2][1]
	p.output = []*os.File{pipes[1][0], pipes[2][0]}
	child = []*os.File{cmd.Stdin.(*os.File), pipes[1][1], pipes[2][1]}
	p.pid, err = s.procs.start(func() (int, error) {
		if err := cmd.Start(); err != nil {
			return 0, err
		}
		return cmd.Process.Pid, nil
	})
	if err != nil {
		p.closeAll()
		return nil, err
	}
	return p, nil
}

func closeFiles(files []*os.File) {
	for _, f := range files {
		if f != nil {
			f.Close()
		}
	}
}

func (p *process) closeAll() {
	if p.stdin != nil {
		p.stdin.Close()
	}
	for _, f := range p.output {
		if f != nil {
			f.Close()
		}
	}
}

// runProcess forwards stdin, output, resizes and signals until the
// process exits, then sends its exit status. If the host goes away first
// the process group is killed.
func (s *Server) runProcess(conn net.Conn, fw *guest.FrameWriter, p *process) error {
	exited := make(chan struct{})
	var pumps sync.WaitGroup
	for i, f := range p.output {
		t := []guest.FrameType{guest.FrameStdout, guest.FrameStderr}[i]
		pumps.Go(func() {
			if _, err := io.Copy(fw.Chunks(t), f); err != nil && !isClosedOutput(err) {
				// The host is gone: stop the command.
				_ = unix.Kill(-p.pid, unix.SIGKILL)
			}
		})
	}
	go s.forwardInput(conn, p, exited)

	waitErr := p.cmd.Wait()
	close(exited)
	s.drainOutput(p, &pumps)
	st := exitStatus(p.cmd, waitErr)
	s.logger.Debug("exec exited", "pid", p.pid, "code", st.Code)
	return fw.WriteJSON(guest.FrameExit, st)
}

// drainOutput waits for pumps (reading p's output) to end once p has
// exited, for at most outputGrace: children that inherited its stdout or
// stderr may hold them open. Then it closes p's files.
func (s *Server) drainOutput(p *process, pumps *sync.WaitGroup) {
	pumpsDone := make(chan struct{})
	go func() { pumps.Wait(); close(pumpsDone) }()
	select {
	case <-pumpsDone:
	case <-time.After(outputGrace):
		s.logger.Debug("output still open after exit; closing", "pid", p.pid)
	}
	p.closeAll()
	<-pumpsDone
}

// isClosedOutput tells the normal ends of an output pipe or pty: EOF, the
// pty's EIO once the terminal's last user is gone, or our own close.
func isClosedOutput(err error) bool {
	return errors.Is(err, unix.EIO) || errors.Is(err, os.ErrClosed) || errors.Is(err, fs.ErrClosed)
}

// exitStatus is the shell's view of how cmd ended.
func exitStatus(cmd *exec.Cmd, waitErr error) guest.ExitStatus {
	if cmd.ProcessState == nil {
		return guest.ExitStatus{Code: 255}
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return guest.ExitStatus{Code: 128 + int(ws.Signal()), Signal: int(ws.Signal())}
	}
	return guest.ExitStatus{Code: cmd.ProcessState.ExitCode()}
}

// forwardInput handles the host's frames: stdin, EOF, resize, signal. A
// stream that ends before the process exited kills the process group.
func (s *Server) forwardInput(conn net.Conn, p *process, exited <-chan struct{}) {
	stdin := make(chan []byte, 64) // nil ends stdin
	go writeStdin(p, stdin, exited)
	stdinOpen := true
	for {
		f, err := guest.ReadFrame(conn)
		if err != nil {
			select {
			case <-exited:
			default:
				s.logger.Info("host went away; killing command", "pid", p.pid, "err", err)
				_ = unix.Kill(-p.pid, unix.SIGKILL)
			}
			return
		}
		switch f.Type {
		case guest.FrameStdin, guest.FrameEOF:
			if !stdinOpen {
				continue
			}
			data := f.Payload
			if f.Type == guest.FrameEOF {
				data, stdinOpen = nil, false
			}
			select {
			case stdin <- data:
			case <-exited:
			}
		case guest.FrameResize:
			var ws guest.WindowSize
			if guest.DecodeJSON(f, guest.FrameResize, &ws) == nil && p.tty != nil {
				_ = pty.Setsize(p.tty, &pty.Winsize{Rows: ws.Rows, Cols: ws.Cols})
			}
		case guest.FrameSignal:
			var sig guest.Signal
			if guest.DecodeJSON(f, guest.FrameSignal, &sig) == nil && sig.Signal > 0 {
				_ = unix.Kill(-p.pid, unix.Signal(sig.Signal))
			}
		}
	}
}

// writeStdin feeds the process's stdin from chunks until a nil chunk
// (EOF) or the process exits.
func writeStdin(p *process, chunks <-chan []byte, exited <-chan struct{}) {
	for {
		select {
		case <-exited:
			return
		case b := <-chunks:
			if b == nil {
				if p.tty != nil {
					_, _ = p.tty.Write([]byte{4}) // ^D
				} else {
					p.stdin.Close()
				}
				return
			}
			if _, err := p.stdin.Write(b); err != nil {
				return
			}
		}
	}
}

// execEnv is a command's environment: root's defaults (TERM too with a
// tty) overridden by the extra entries.
func execEnv(extra []string, tty bool) []string {
	env := []string{"PATH=" + defaultPath, "HOME=/root", "USER=root", "LOGNAME=root", "SHELL=/bin/sh"}
	if tty {
		env = append(env, "TERM=xterm-256color")
	}
	for _, kv := range extra {
		k, _, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		env = slicesDeleteKey(env, k)
		env = append(env, kv)
	}
	return env
}

func slicesDeleteKey(env []string, key string) []string {
	out := env[:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, key+"=") {
			out = append(out, kv)
		}
	}
	return out
}

func envValue(env []string, key string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(env[i], key+"="); ok {
			return v
		}
	}
	return ""
}

// lookPath finds name the way a shell does, in pathEnv (relative names
// with a slash against dir). On failure it returns the shell's exit code
// (127 not found, 126 not executable) and message.
func lookPath(name, dir, pathEnv string) (string, int, string) {
	if strings.Contains(name, "/") {
		p := name
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		switch st, err := os.Stat(p); {
		case err != nil:
			return "", 127, fmt.Sprintf("sh: %s: not found", name)
		case st.IsDir() || st.Mode()&0o111 == 0:
			return "", 126, fmt.Sprintf("sh: %s: Permission denied", name)
		}
		return p, 0, ""
	}
	denied := false
	for _, d := range filepath.SplitList(pathEnv) {
		if d == "" {
			d = "."
		}
		p := filepath.Join(d, name)
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		st, err := os.Stat(p)
		if err != nil || st.IsDir() {
			continue
		}
		if st.Mode()&0o111 == 0 {
			denied = true
			continue
		}
		return p, 0, ""
	}
	if denied {
		return "", 126, fmt.Sprintf("sh: %s: Permission denied", name)
	}
	return "", 127, fmt.Sprintf("sh: %s: not found", name)
}
