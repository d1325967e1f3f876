package api

import "time"

// VersionInfo describes the running daemon.
type VersionInfo struct {
	Version    string    `json:"version"`
	APIVersion string    `json:"api_version"`
	PID        int       `json:"pid"`
	StateDir   string    `json:"state_dir"`
	StartedAt  time.Time `json:"started_at"`
	// Web is the state of the daemon's web UI.
	Web WebStatus `json:"web"`
	// Goroutines is how many goroutines the daemon runs now: a number
	// that should come back to where it was once work is done.
	Goroutines int `json:"goroutines"`
}

// VM states.
const (
	StateCreating = "creating" // record made, disk being copied
	StateCreated  = "created"  // disk made, never started
	StateStarting = "starting" // VMM started, waiting for the agent
	StateRunning  = "running"  // agent answered
	StatePaused   = "paused"   // vCPUs stopped by vm pause; the VMM runs
	StateStopped  = "stopped"  // VMM exited cleanly or was stopped
	StateFailed   = "failed"   // start or run failed; see LastError and logs
	StateDeleting = "deleting" // being deleted; a restarted daemon finishes it
)

// VM is a VM as the API shows it.
type VM struct {
	ID         string    `json:"id"`
	Name       string    `json:"name"`
	State      string    `json:"state"`
	Image      string    `json:"image"`
	Kernel     string    `json:"kernel"`
	VMM        string    `json:"vmm"`
	Accel      string    `json:"accel,omitempty"`
	VCPUs      int       `json:"vcpus"`
	MemoryMiB  int       `json:"memory_mib"`
	DiskBytes  int64     `json:"disk_bytes"`
	DiskMethod string    `json:"disk_method,omitempty"`
	Disk       string    `json:"disk,omitempty"` // the root disk's file: a qcow2 layer, or a raw file in Dir
	PID        int       `json:"pid,omitempty"`
	IP         string    `json:"ip,omitempty"`
	MAC        string    `json:"mac,omitempty"`
	Tap        string    `json:"tap,omitempty"`
	Dir        string    `json:"dir"`
	ConsoleLog string    `json:"console_log"`
	LastError  string    `json:"last_error,omitempty"`
	Agent      string    `json:"agent,omitempty"` // agent version once it answered
	VsockCID   uint32    `json:"vsock_cid,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
	// Workspace is where the VM's workspace was copied from, if any.
	Workspace *WorkspaceSource `json:"workspace,omitempty"`
	// Credentials are the guest paths of the credential files synced at
	// the last start (paths only, never contents).
	Credentials []string `json:"credentials,omitempty"`
	// Warnings are what the last start (since the daemon started) could
	// not do, such as a credential file it could not read.
	Warnings []string `json:"warnings,omitempty"`
	// Net is its egress policy; Ports its port forwards.
	Net   NetPolicy     `json:"net"`
	Ports []PortForward `json:"ports,omitempty"`
	// Origin is the snapshot it was restored from, if any; Boot says how
	// its last start went (cold or warm, and why).
	Origin string    `json:"origin,omitempty"`
	Boot   *BootInfo `json:"boot,omitempty"`
}

// Boot modes: a cold boot of the kernel, a warm start from the image's
// warm snapshot, or a restore of a snapshot the user named.
const (
	BootCold     = "cold"
	BootWarm     = "warm"
	BootSnapshot = "snapshot"
)

// BootInfo says how a VM's last start went.
type BootInfo struct {
	Mode string `json:"mode"`
	// Snapshot is the snapshot it was restored from (warm, snapshot).
	Snapshot string `json:"snapshot,omitempty"`
	// Why a cold boot was not warm.
	Why string `json:"why,omitempty"`
	// MadeWarm is the warm snapshot this cold boot left for the next
	// ones, and MadeWarmMS what taking it cost.
	MadeWarm   string `json:"made_warm,omitempty"`
	MadeWarmMS int64  `json:"made_warm_ms,omitempty"`
}

// WorkspaceSource records the host repo a VM's workspace came from.
type WorkspaceSource struct {
	HostPath  string `json:"host_path"`  // the host repo's top directory
	GuestPath string `json:"guest_path"` // where it was copied in the guest
	Branch    string `json:"branch,omitempty"`
	Commit    string `json:"commit,omitempty"` // the host HEAD it was copied at
}

// CreateVMRequest is the body of POST /v1/vms.
type CreateVMRequest struct {
	Name      string `json:"name,omitempty"`
	Image     string `json:"image"`
	Kernel    string `json:"kernel,omitempty"` // overrides the image's kernel
	VCPUs     int    `json:"vcpus,omitempty"`
	MemoryMiB int    `json:"memory_mib,omitempty"`
	DiskBytes int64  `json:"disk_bytes,omitempty"`
	NoStart   bool   `json:"no_start,omitempty"`
	// ReadyTimeoutSeconds bounds the wait for the guest agent (default 90).
	ReadyTimeoutSeconds int `json:"ready_timeout_seconds,omitempty"`
	// Ports are forwards in -p syntax; Net the policy in --net syntax
	// (default nat); Isolate cuts it off from the other VMs.
	Ports   []string `json:"ports,omitempty"`
	Net     string   `json:"net,omitempty"`
	Isolate bool     `json:"isolate,omitempty"`
	// FromSnapshot restores the VM from a snapshot instead of booting it.
	FromSnapshot string `json:"from_snapshot,omitempty"`
	// Cold boots even when a warm snapshot of the image could be restored.
	Cold bool `json:"cold,omitempty"`
}

// StartVMRequest is the body of POST /v1/vms/{name}/start.
type StartVMRequest struct {
	ReadyTimeoutSeconds int `json:"ready_timeout_seconds,omitempty"`
}

// StopVMRequest is the body of POST /v1/vms/{name}/stop.
type StopVMRequest struct {
	Force          bool `json:"force,omitempty"`
	TimeoutSeconds int  `json:"timeout_seconds,omitempty"`
}

// Kernel is a kernel bundle.
type Kernel struct {
	Name      string    `json:"name"`
	Release   string    `json:"release"`
	Kernel    string    `json:"kernel"`
	Initrd    string    `json:"initrd,omitempty"`
	Modules   string    `json:"modules,omitempty"`
	Source    string    `json:"source"`
	SHA256    string    `json:"sha256,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	// SizeBytes is what its files (kernel, initrd, modules) take.
	SizeBytes int64 `json:"size_bytes"`
}

// PullKernelRequest is the body of POST /v1/kernels/pull.
type PullKernelRequest struct {
	Name   string `json:"name"`
	Mirror string `json:"mirror,omitempty"`
}

// ImportKernelRequest is the body of POST /v1/kernels/import.
type ImportKernelRequest struct {
	Name string `json:"name,omitempty"`
	Deb  string `json:"deb"` // absolute path on the daemon's host
}

// RegisterKernelRequest is the body of POST /v1/kernels/register.
type RegisterKernelRequest struct {
	Name   string `json:"name"`
	Kernel string `json:"kernel"`
	Initrd string `json:"initrd,omitempty"`
}

// Image is a root filesystem plus its manifest.
type Image struct {
	Name      string    `json:"name"`
	Source    string    `json:"source"`
	Digest    string    `json:"digest,omitempty"`
	Rootfs    string    `json:"rootfs"`
	SizeBytes int64     `json:"size_bytes"`
	KernelRef string    `json:"kernel_ref"`
	Distro    string    `json:"distro,omitempty"`
	HasSSHD   bool      `json:"has_sshd"`
	Injected  bool      `json:"injected"`
	CreatedAt time.Time `json:"created_at"`
}

// PullImageRequest is the body of POST /v1/images/pull: a catalog name
// (e.g. debian-bookworm) or an OCI reference.
type PullImageRequest struct {
	Ref       string `json:"ref"`
	Name      string `json:"name,omitempty"`       // image name; default derived from Ref
	KernelRef string `json:"kernel_ref,omitempty"` // default generic-6.1
	SizeBytes int64  `json:"size_bytes,omitempty"` // ext4 size; default content plus headroom
	Refresh   bool   `json:"refresh,omitempty"`    // rebuild even if present
}

// RegisterImageRequest is the body of POST /v1/images/register.
type RegisterImageRequest struct {
	Name      string `json:"name"`
	Rootfs    string `json:"rootfs"` // absolute path on the daemon's host
	KernelRef string `json:"kernel_ref"`
}

// ExecRequest starts a command in a VM over the guest agent. It is the
// first message on an upgraded /v1/vms/{name}/exec connection.
type ExecRequest struct {
	Argv []string `json:"argv"`
	Env  []string `json:"env,omitempty"`
	Cwd  string   `json:"cwd,omitempty"`
	TTY  bool     `json:"tty,omitempty"`
	Rows int      `json:"rows,omitempty"`
	Cols int      `json:"cols,omitempty"`
}
