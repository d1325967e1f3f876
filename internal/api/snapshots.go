package api

import "time"

// Snapshot states.
const (
	SnapshotCreating = "creating" // being written; a restarted daemon removes it
	SnapshotReady    = "ready"
)

// Snapshot kinds.
const (
	SnapshotUser = "user" // made by vm snapshot or vm fork
	SnapshotWarm = "warm" // the ready snapshot of an image that warm start restores
)

// Snapshot is a VM's memory and disk at one moment, as the API shows it.
type Snapshot struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	State string `json:"state"`
	Kind  string `json:"kind"`
	// SourceVM is the name of the VM it was taken of.
	SourceVM string `json:"source_vm"`
	// What a restore must match.
	Image      string `json:"image"`
	Kernel     string `json:"kernel"`
	VMM        string `json:"vmm"`
	VMMVersion string `json:"vmm_version"`
	VCPUs      int    `json:"vcpus"`
	MemoryMiB  int    `json:"memory_mib"`
	DiskBytes  int64  `json:"disk_bytes"`
	// Memory is false for a disk-only snapshot (of a stopped VM).
	Memory bool `json:"memory"`
	// Disk is how it holds the disk: SnapshotDiskLayer (a frozen qcow2
	// layer that VMs made from it build on) or SnapshotDiskCopy (a copy
	// of a raw disk, which they copy).
	Disk string `json:"disk"`
	// Dir holds its files; Bytes is what they use on disk.
	Dir       string    `json:"dir"`
	Bytes     int64     `json:"bytes"`
	CreatedAt time.Time `json:"created_at"`
	// UsedBy are the VMs whose disks build on it.
	UsedBy []string `json:"used_by,omitempty"`
}

// How a snapshot holds its disk (Snapshot.Disk).
const (
	SnapshotDiskLayer = "qcow2-layer"
	SnapshotDiskCopy  = "raw-copy"
)

// SnapshotVMRequest is the body of POST /v1/vms/{name}/snapshot.
type SnapshotVMRequest struct {
	Name string `json:"name,omitempty"` // default <vm>-<time>
}

// ForkVMRequest is the body of POST /v1/vms/{name}/fork.
type ForkVMRequest struct {
	Name string `json:"name,omitempty"` // the new VM's name
	// ReadyTimeoutSeconds bounds the wait for the fork's agent.
	ReadyTimeoutSeconds int `json:"ready_timeout_seconds,omitempty"`
}
