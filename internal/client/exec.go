package client

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"syscall"

	"banger/internal/guest"
)

// StreamUpgrade is the Upgrade token of exec connections; it matches the
// daemon's.
const StreamUpgrade = "banger-agent-stream"

// Exec is one command running in a VM. The daemon splices this connection
// to the guest agent, so it speaks the agent's exec frames. Send methods
// are safe to call concurrently with Wait.
type Exec struct {
	conn io.ReadWriteCloser
	fw   *guest.FrameWriter
	pid  int
	stop func() bool
}

// OpenExec starts req in VM vm and returns once the command runs.
func (c *Client) OpenExec(ctx context.Context, vm string, req guest.ExecRequest) (*Exec, error) {
	hreq, err := c.newRequest(ctx, http.MethodPost, path("vms", vm, "exec"), nil)
	if err != nil {
		return nil, err
	}
	hreq.Header.Set("Connection", "Upgrade")
	hreq.Header.Set("Upgrade", StreamUpgrade)
	resp, err := c.send(hreq)
	if err != nil {
		return nil, err
	}
	rwc, ok := resp.Body.(io.ReadWriteCloser)
	if resp.StatusCode != http.StatusSwitchingProtocols || !ok {
		resp.Body.Close()
		return nil, fmt.Errorf("bangerd did not upgrade the exec connection (%s)", resp.Status)
	}
	e := &Exec{conn: rwc, fw: guest.NewFrameWriter(rwc)}
	e.stop = context.AfterFunc(ctx, func() { rwc.Close() })
	if err := e.fw.WriteJSON(guest.FrameRequest, guest.Request{Version: guest.ProtocolVersion, Op: guest.OpExec, Exec: &req}); err != nil {
		e.Close()
		return nil, fmt.Errorf("sending exec request: %w", err)
	}
	f, err := guest.ReadFrame(rwc)
	if err != nil {
		e.Close()
		return nil, fmt.Errorf("exec: connection lost: %w", err)
	}
	var r guest.Response
	if err := guest.DecodeJSON(f, guest.FrameResponse, &r); err != nil {
		e.Close()
		return nil, fmt.Errorf("exec %s: %w", req.Argv[0], err)
	}
	e.pid = r.PID
	return e, nil
}

// PID is the command's process id in the guest.
func (e *Exec) PID() int { return e.pid }

// CopyStdin sends r to the command's stdin, then closes it.
func (e *Exec) CopyStdin(r io.Reader) error {
	if _, err := io.Copy(e.fw.Chunks(guest.FrameStdin), r); err != nil {
		return err
	}
	return e.fw.WriteFrame(guest.FrameEOF, nil)
}

// Signal delivers sig to the command's process group.
func (e *Exec) Signal(sig syscall.Signal) error {
	return e.fw.WriteJSON(guest.FrameSignal, guest.Signal{Signal: int(sig)})
}

// Resize sets the terminal size of a tty command.
func (e *Exec) Resize(rows, cols uint16) error {
	return e.fw.WriteJSON(guest.FrameResize, guest.WindowSize{Rows: rows, Cols: cols})
}

// Wait copies output until the command exits and returns how it exited.
func (e *Exec) Wait(stdout, stderr io.Writer) (guest.ExitStatus, error) {
	for {
		f, err := guest.ReadFrame(e.conn)
		if err != nil {
			return guest.ExitStatus{}, fmt.Errorf("exec: connection to the guest lost before the command exited: %w", err)
		}
		switch f.Type {
		case guest.FrameExit:
			var st guest.ExitStatus
			return st, guest.DecodeJSON(f, guest.FrameExit, &st)
		case guest.FrameError:
			return guest.ExitStatus{}, guest.DecodeError(f)
		case guest.FrameStdout:
			if stdout != nil {
				stdout.Write(f.Payload)
			}
		case guest.FrameStderr:
			if stderr != nil {
				stderr.Write(f.Payload)
			}
		}
	}
}

// Close ends the connection; a command still running is killed.
func (e *Exec) Close() error {
	e.stop()
	return e.conn.Close()
}
