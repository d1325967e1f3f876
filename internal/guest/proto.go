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
)

// Request opens every stream.
type Request struct {
	Version int            `json:"version"`
	Op      Op             `json:"op"`
	Exec    *ExecRequest   `json:"exec,omitempty"`
	Put     *PutRequest    `json:"put,omitempty"`
	Get     *GetRequest    `json:"get,omitempty"`
	PutTar  *PutTarRequest `json:"put_tar,omitempty"`
}

// Response answers a Request.
type Response struct {
	Hello *Info     `json:"hello,omitempty"`
	PID   int       `json:"pid,omitempty"`
	File  *FileInfo `json:"file,omitempty"`
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

// Is lets errors.Is(err, fs.ErrNotExist) match a KindNotExist error.
func (e *RemoteError) Is(target error) bool {
	return target == fs.ErrNotExist && e.Kind == KindNotExist
}

// ToRemoteError converts err for sending in a FrameError.
func ToRemoteError(err error) *RemoteError {
	var re *RemoteError
	if errors.As(err, &re) {
		return re
	}
	kind := KindInternal
	if errors.Is(err, fs.ErrNotExist) {
		kind = KindNotExist
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
