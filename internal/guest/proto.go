package guest

import (
	"errors"
	"fmt"
	"io/fs"
	"time"
)

// ProtocolVersion is the version of the protocol this build speaks. Bump
// it on any incompatible change. The Hello exchange (a FrameRequest with
// op "hello" answered by a FrameResponse carrying "hello.protocol_version")
// must never change shape, so that any two versions can tell each other
// apart. Version 2 added the authenticated handshake.
const ProtocolVersion = 2

// AgentPath is where the agent binary lives in a guest's root filesystem.
// It is also the initrd's fallback init when the rootfs names none.
const AgentPath = "/usr/lib/banger/banger-agent"

// AgentPort is the vsock port the agent listens on.
const AgentPort = 1024

// AgentKeyPath is where the agent reads its VM's key in the guest: hex,
// KeySize bytes, root-only. banger's initrd writes it from the seed drive
// before the guest's init starts; the agent refuses every host while it
// is missing.
const AgentKeyPath = "/var/lib/banger/agent.key"

// SerialPortName is the name of the virtio-serial port the agent looks
// for (/sys/class/virtio-ports/*/name).
const SerialPortName = "banger.agent"

// Op names an operation; it is the first frame's "op".
type Op string

// Operations and the frames that follow their FrameRequest.
const (
	// OpHello: guest answers FrameResponse{Hello}.
	OpHello Op = "hello"
	// OpExec: guest answers FrameResponse{PID} once the process runs (or
	// FrameError), then FrameStdout/FrameStderr and finally FrameExit.
	// The host sends FrameStdin, FrameEOF, FrameResize and FrameSignal.
	// Closing the host side before FrameExit kills the process group.
	OpExec Op = "exec"
	// OpPut: host sends FrameData then FrameEOF; guest answers
	// FrameResponse once the file is in place, or FrameError (possibly
	// before the content is all sent).
	OpPut Op = "put"
	// OpGet: guest answers FrameResponse{File}, then FrameData and
	// FrameEOF (or FrameError).
	OpGet Op = "get"
	// OpPutTar: like OpPut, the content being a tar stream extracted
	// under PutTar.Dir.
	OpPutTar Op = "put-tar"
	// OpShutdown: guest answers FrameResponse, then syncs and powers off.
	OpShutdown Op = "shutdown"

	// Sessions are long-lived commands the agent owns: they outlive the
	// stream that started them and every attach, and their output is kept
	// in the guest under SessionDir/<name>/ (stdout, stderr) from the
	// first byte, so any reader can ask for it from any offset.

	// OpSessionStart: guest answers FrameResponse{Session} once the
	// process runs, or FrameError (a taken name, a command not found, a
	// missing working directory). The stream then ends.
	OpSessionStart Op = "session-start"
	// OpSessionList: guest answers FrameResponse{Sessions}, oldest first.
	OpSessionList Op = "session-list"
	// OpSessionAttach: guest answers FrameResponse{Session} (or
	// FrameError: an unknown session, an offset past the output written),
	// then sends the session's output from the requested offsets as
	// FrameStdout/FrameStderr in the order it was written. With Follow,
	// once the process has exited and its output is all sent, FrameExit
	// ends the stream; without Follow, a FrameEOF ends it as soon as the
	// output written when it attached is sent (also when the session has
	// exited: the Response's Session says so). With Input, the host may
	// send FrameStdin (bytes for the session's stdin, written whole, so
	// the input of several attaches interleaves by frame; dropped once
	// the stdin is closed) and FrameResize (tty mode; ignored otherwise).
	// FrameStdin without Input or in null mode, and any other frame but
	// FrameEOF (ignored: it does not close the session's stdin), get a
	// FrameError that ends the attach. The host closing the stream ends
	// the attach only: the session goes on.
	OpSessionAttach Op = "session-attach"
	// OpSessionControl: signal, resize or close the stdin of a session;
	// guest answers FrameResponse{Session} (after acting) or FrameError
	// (then nothing was done: an unknown or exited session, a part of the
	// request that does not apply to its stdin mode).
	OpSessionControl Op = "session-control"

	// OpReidentify: after a restore from a memory snapshot (vm fork,
	// vm create --from-snapshot, warm start) the guest still believes it
	// is the VM it was snapshotted from. The host sends the new identity
	// (Request.Reidentify); the guest checks all of it first (a bad field
	// gets a KindInvalid FrameError and nothing changes), then applies it
	// in this order: clock, network (eth0 down, MAC, IPv4 addresses
	// flushed, the new one added, up, default route), resolv.conf,
	// hostname (with /etc/hostname and the 127.0.1.1 line of /etc/hosts),
	// machine-id, SSH host key, sshd reloaded. It answers FrameResponse
	// once all of it is in force, or FrameError naming the part that
	// failed (the parts before it stay applied; the agent key is kept).
	// The agent key is swapped last, as the answer is written (and put
	// back if it cannot be): a connection made once the host has the
	// answer must authenticate with the new key; the current one goes on. The agent's transport may have been reset by the restore;
	// the agent reopens it rather than exiting.
	OpReidentify Op = "reidentify"
)

// ReidentifyRequest is a restored guest's new identity. Every field is
// required except where it says otherwise.
type ReidentifyRequest struct {
	// Time is the host's clock as it sent the request; the guest sets
	// its realtime clock to it.
	Time time.Time `json:"time"`
	// Hostname is the VM's name.
	Hostname string `json:"hostname"`
	// MAC is eth0's new address (aa:bb:cc:dd:ee:ff).
	MAC string `json:"mac"`
	// Address is eth0's new address with its prefix (172.16.0.5/24);
	// Gateway the default route; DNS the resolvers written to
	// /etc/resolv.conf (empty: leave it).
	Address string   `json:"address"`
	Gateway string   `json:"gateway"`
	DNS     []string `json:"dns,omitempty"`
	// MachineID is the new /etc/machine-id (32 lowercase hex digits).
	MachineID string `json:"machine_id"`
	// HostKey and HostKeyPub are the new ed25519 SSH host key (OpenSSH
	// private key PEM and the public line) for /etc/ssh/ssh_host_ed25519_key.
	HostKey    string `json:"host_key"`
	HostKeyPub string `json:"host_key_pub"`
	// AgentKey (hex, KeySize bytes) replaces the agent's key in memory and
	// at AgentKeyPath as the answer is sent; the next connection must
	// authenticate with it. Empty: keep the current key.
	AgentKey string `json:"agent_key,omitempty"`
}

// SessionDir is where the agent keeps each session's output in the guest.
const SessionDir = "/var/lib/banger/sessions"

// Stdin modes of a session.
const (
	StdinPipe = "pipe" // stdin is a pipe the attached clients write to
	StdinTTY  = "tty"  // the session runs on a pty; stdout carries its output
	StdinNull = "null" // stdin is /dev/null
)

// Session states as the agent reports them.
const (
	SessionRunning = "running"
	SessionExited  = "exited"
)

// Request opens every stream.
type Request struct {
	Version int            `json:"version"`
	Op      Op             `json:"op"`
	Exec    *ExecRequest   `json:"exec,omitempty"`
	Put     *PutRequest    `json:"put,omitempty"`
	Get     *GetRequest    `json:"get,omitempty"`
	PutTar  *PutTarRequest `json:"put_tar,omitempty"`

	SessionStart   *SessionStartRequest   `json:"session_start,omitempty"`
	SessionAttach  *SessionAttachRequest  `json:"session_attach,omitempty"`
	SessionControl *SessionControlRequest `json:"session_control,omitempty"`

	Reidentify *ReidentifyRequest `json:"reidentify,omitempty"`
}

// Response answers a Request.
type Response struct {
	Hello    *Info         `json:"hello,omitempty"`
	PID      int           `json:"pid,omitempty"`
	File     *FileInfo     `json:"file,omitempty"`
	Session  *SessionInfo  `json:"session,omitempty"`
	Sessions []SessionInfo `json:"sessions,omitempty"`
}

// SessionStartRequest starts a session. Name must match
// [A-Za-z0-9][A-Za-z0-9._-]{0,63}. A name in use by a running session is
// refused; the name of one that has exited is taken over (its record
// and output are replaced).
type SessionStartRequest struct {
	Name      string   `json:"name"`
	Argv      []string `json:"argv"`
	Env       []string `json:"env,omitempty"`  // as ExecRequest.Env
	Dir       string   `json:"dir,omitempty"`  // as ExecRequest.Dir
	StdinMode string   `json:"stdin_mode"`     // StdinPipe (also when empty), StdinTTY or StdinNull
	Rows      uint16   `json:"rows,omitempty"` // initial tty size (0: 24x80)
	Cols      uint16   `json:"cols,omitempty"`
}

// SessionInfo is what the agent knows of a session. It is exited once
// its process has exited and its output is all kept (children that hold
// the output open are given 2 s more).
type SessionInfo struct {
	Name        string      `json:"name"`
	Argv        []string    `json:"argv"`
	Dir         string      `json:"dir"` // the working directory it runs in
	StdinMode   string      `json:"stdin_mode"`
	State       string      `json:"state"` // SessionRunning or SessionExited
	PID         int         `json:"pid"`
	Exit        *ExitStatus `json:"exit,omitempty"` // once exited
	StartedAt   time.Time   `json:"started_at"`
	EndedAt     time.Time   `json:"ended_at,omitzero"`
	StdoutBytes int64       `json:"stdout_bytes"` // output kept so far
	StderrBytes int64       `json:"stderr_bytes"`
	Attached    int         `json:"attached"` // attach streams open with Input
}

// SessionAttachRequest reads (and, with Input, writes to) a session.
// An offset below zero means the current end: only output written from
// now on. Stdout and Stderr choose the streams sent; both false means
// both.
type SessionAttachRequest struct {
	Name         string `json:"name"`
	StdoutOffset int64  `json:"stdout_offset"`
	StderrOffset int64  `json:"stderr_offset"`
	Stdout       bool   `json:"stdout,omitempty"`
	Stderr       bool   `json:"stderr,omitempty"`
	Follow       bool   `json:"follow,omitempty"`
	Input        bool   `json:"input,omitempty"`
}

// SessionControlRequest acts on a session. Signal (if not 0, up to 64) is
// delivered to its process group; Rows and Cols (if not 0; both are then
// needed) resize its tty; CloseStdin closes its stdin pipe (pipe mode) or
// types ^D (tty mode). A request with none of them just answers.
type SessionControlRequest struct {
	Name       string `json:"name"`
	Signal     int    `json:"signal,omitempty"`
	Rows       uint16 `json:"rows,omitempty"`
	Cols       uint16 `json:"cols,omitempty"`
	CloseStdin bool   `json:"close_stdin,omitempty"`
}

// Info describes the guest, as answered to Hello.
type Info struct {
	ProtocolVersion int    `json:"protocol_version"`
	AgentVersion    string `json:"agent_version"`
	KernelRelease   string `json:"kernel_release"`
	Hostname        string `json:"hostname"`
	SSHD            bool   `json:"sshd"` // an sshd binary exists in the guest
}

// ExecRequest is a command to run in the guest.
type ExecRequest struct {
	Argv []string `json:"argv"`
	// Env entries ("K=V") are added to the agent's defaults (PATH, HOME,
	// USER, ...), overriding them.
	Env []string `json:"env,omitempty"`
	// Dir is the working directory; empty means root's home.
	Dir  string `json:"dir,omitempty"`
	TTY  bool   `json:"tty,omitempty"`
	Rows uint16 `json:"rows,omitempty"` // initial tty size
	Cols uint16 `json:"cols,omitempty"`
}

// WindowSize is a tty size.
type WindowSize struct {
	Rows uint16 `json:"rows"`
	Cols uint16 `json:"cols"`
}

// Signal is a signal number to deliver to the exec'd process group.
type Signal struct {
	Signal int `json:"signal"`
}

// ExitStatus ends an exec. Code is the exit status, or 128+N when the
// process died of signal N (then Signal is N).
type ExitStatus struct {
	Code   int `json:"code"`
	Signal int `json:"signal,omitempty"`
}

// PutRequest describes a file to write in the guest.
type PutRequest struct {
	Path  string      `json:"path"`
	Mode  fs.FileMode `json:"mode"` // permission bits plus setuid, setgid, sticky
	UID   int         `json:"uid"`
	GID   int         `json:"gid"`
	MTime time.Time   `json:"mtime,omitzero"` // zero: leave the write time
}

// GetRequest names a file to read from the guest.
type GetRequest struct {
	Path string `json:"path"`
}

// PutTarRequest names the directory a tar stream is extracted under.
type PutTarRequest struct {
	Dir string `json:"dir"`
}

// FileInfo describes a regular file in the guest.
type FileInfo struct {
	Size  int64       `json:"size"`
	Mode  fs.FileMode `json:"mode"`
	UID   int         `json:"uid"`
	GID   int         `json:"gid"`
	MTime time.Time   `json:"mtime"`
}

// Error kinds a RemoteError carries.
const (
	KindInternal = "internal"  // anything else
	KindNotExist = "not-exist" // a path does not exist
	KindInvalid  = "invalid"   // a malformed or unsupported request
	KindExist    = "exist"     // a name is taken (a running session's)
)

// RemoteError is an error reported by the agent.
type RemoteError struct {
	Kind    string `json:"kind"`
	Message string `json:"message"`
}

func (e *RemoteError) Error() string { return "guest: " + e.Message }

// Caps on what the host keeps of strings a guest sends.
const (
	// MaxErrorMessage is the longest RemoteError message kept.
	MaxErrorMessage = 4 << 10
	// MaxInfoField is the longest Info string kept.
	MaxInfoField = 256
)

// truncated cuts s to at most n bytes, marking the cut.
func truncated(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + " [truncated]"
}

// Is lets errors.Is(err, fs.ErrNotExist) match a KindNotExist error and
// errors.Is(err, fs.ErrExist) a KindExist one.
func (e *RemoteError) Is(target error) bool {
	return (target == fs.ErrNotExist && e.Kind == KindNotExist) ||
		(target == fs.ErrExist && e.Kind == KindExist)
}

// ToRemoteError converts err for sending in a FrameError.
func ToRemoteError(err error) *RemoteError {
	var re *RemoteError
	if errors.As(err, &re) {
		return re
	}
	kind := KindInternal
	switch {
	case errors.Is(err, fs.ErrNotExist):
		kind = KindNotExist
	case errors.Is(err, fs.ErrExist):
		kind = KindExist
	}
	return &RemoteError{Kind: kind, Message: err.Error()}
}

// ErrVersionMismatch is wrapped by the error Hello returns when the agent
// speaks another protocol version.
var ErrVersionMismatch = errors.New("protocol version mismatch")

// VersionError reports that the agent and bangerd speak different
// protocol versions.
type VersionError struct {
	Guest, Host int
}

func (e *VersionError) Error() string {
	return fmt.Sprintf("guest agent speaks protocol v%d, bangerd speaks v%d; "+
		"rebuild the image with this banger (banger image pull --refresh ...) and recreate the vm", e.Guest, e.Host)
}

// Unwrap returns ErrVersionMismatch.
func (e *VersionError) Unwrap() error { return ErrVersionMismatch }
