package api

import "time"

// Session states.
const (
	SessionRunning = "running" // the guest agent runs it
	SessionExited  = "exited"  // it ended; ExitCode says how
	// SessionLost: the daemon can no longer reach it (the VM stopped, or
	// the guest rebooted); its logs are kept.
	SessionLost = "lost"
)

// Session is a long-lived guest command, as the API shows it.
type Session struct {
	VM        string   `json:"vm"`
	Name      string   `json:"name"`
	Argv      []string `json:"argv"`
	Dir       string   `json:"dir,omitempty"`
	StdinMode string   `json:"stdin_mode"`
	State     string   `json:"state"`
	PID       int      `json:"pid,omitempty"`
	// ExitCode is set once the session exited: its status, or 128+N when
	// it died of signal N (then Signal is N).
	ExitCode *int   `json:"exit_code,omitempty"`
	Signal   int    `json:"signal,omitempty"`
	Reason   string `json:"reason,omitempty"` // why it is lost
	// Warning says why the host copy of its output is behind (a full
	// file system), while it is.
	Warning   string    `json:"warning,omitempty"`
	StartedAt time.Time `json:"started_at"`
	EndedAt   time.Time `json:"ended_at,omitzero"`
	// Attached counts the clients connected to Socket now.
	Attached int `json:"attached"`
	// Socket is the host Unix socket that attaches to the session while
	// it runs: plain bytes, the client's writes go to its stdin and its
	// stdout (in tty mode, its terminal) comes back. See docs/sessions.md.
	Socket string `json:"socket,omitempty"`
	// Bytes of output mirrored on the host so far.
	StdoutBytes int64 `json:"stdout_bytes"`
	StderrBytes int64 `json:"stderr_bytes"`
}

// StartSessionRequest is the body of POST /v1/vms/{name}/sessions.
type StartSessionRequest struct {
	Name      string   `json:"name"`
	Argv      []string `json:"argv"`
	Dir       string   `json:"dir,omitempty"`
	Env       []string `json:"env,omitempty"`
	StdinMode string   `json:"stdin_mode,omitempty"` // pipe (default), tty or null
	Rows      uint16   `json:"rows,omitempty"`
	Cols      uint16   `json:"cols,omitempty"`
}

// StopSessionRequest is the body of POST /v1/vms/{name}/sessions/{session}/stop.
type StopSessionRequest struct {
	// Signal is sent first (default SIGTERM, 15); if the session still
	// runs after TimeoutSeconds (default 10), it is killed.
	Signal         int `json:"signal,omitempty"`
	TimeoutSeconds int `json:"timeout_seconds,omitempty"`
}

// ResizeSessionRequest is the body of POST /v1/vms/{name}/sessions/{session}/resize.
type ResizeSessionRequest struct {
	Rows uint16 `json:"rows"`
	Cols uint16 `json:"cols"`
}
