package firecracker

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"banger/internal/unixhttp"
)

// Wire types of the Firecracker API, named after the definitions in the
// v1.16.1 swagger spec. Only the fields banger uses are present.

// MachineConfig is the MachineConfiguration definition.
type MachineConfig struct {
	VCPUCount       int  `json:"vcpu_count"`
	MemSizeMiB      int  `json:"mem_size_mib"`
	SMT             bool `json:"smt"`
	TrackDirtyPages bool `json:"track_dirty_pages"`
}

// BootSource is the BootSource definition.
type BootSource struct {
	KernelImagePath string `json:"kernel_image_path"`
	InitrdPath      string `json:"initrd_path,omitempty"`
	BootArgs        string `json:"boot_args,omitempty"`
}

// DriveConfig is the Drive definition for a virtio-block drive.
type DriveConfig struct {
	DriveID      string `json:"drive_id"`
	PathOnHost   string `json:"path_on_host"`
	IsRootDevice bool   `json:"is_root_device"`
	IsReadOnly   bool   `json:"is_read_only"`
}

// NetworkInterface is the NetworkInterface definition.
type NetworkInterface struct {
	IfaceID     string `json:"iface_id"`
	HostDevName string `json:"host_dev_name"`
	GuestMAC    string `json:"guest_mac,omitempty"`
}

// VsockConfig is the Vsock definition.
type VsockConfig struct {
	GuestCID uint32 `json:"guest_cid"`
	UDSPath  string `json:"uds_path"`
}

// LoggerConfig is the Logger definition.
type LoggerConfig struct {
	LogPath   string `json:"log_path"`
	Level     string `json:"level,omitempty"`
	ShowLevel bool   `json:"show_level"`
}

// MetricsConfig is the Metrics definition.
type MetricsConfig struct {
	MetricsPath string `json:"metrics_path"`
}

// SnapshotCreate is the SnapshotCreateParams definition.
type SnapshotCreate struct {
	SnapshotPath string `json:"snapshot_path"`
	MemFilePath  string `json:"mem_file_path"`
	SnapshotType string `json:"snapshot_type,omitempty"`
}

// MemoryBackend is the MemoryBackend definition.
type MemoryBackend struct {
	BackendType string `json:"backend_type"`
	BackendPath string `json:"backend_path"`
}

// NetworkOverride is the NetworkOverride definition.
type NetworkOverride struct {
	IfaceID     string `json:"iface_id"`
	HostDevName string `json:"host_dev_name"`
}

// VsockOverride is the VsockOverride definition.
type VsockOverride struct {
	UDSPath string `json:"uds_path"`
}

// SnapshotLoad is the SnapshotLoadParams definition.
type SnapshotLoad struct {
	SnapshotPath     string            `json:"snapshot_path"`
	MemBackend       MemoryBackend     `json:"mem_backend"`
	ResumeVM         bool              `json:"resume_vm"`
	NetworkOverrides []NetworkOverride `json:"network_overrides,omitempty"`
	VsockOverride    *VsockOverride    `json:"vsock_override,omitempty"`
}

// InstanceInfo is the InstanceInfo definition returned by GET /.
type InstanceInfo struct {
	AppName    string `json:"app_name"`
	ID         string `json:"id"`
	State      string `json:"state"` // "Not started", "Running" or "Paused"
	VMMVersion string `json:"vmm_version"`
}

// Action types of PUT /actions.
const (
	ActionInstanceStart  = "InstanceStart"
	ActionSendCtrlAltDel = "SendCtrlAltDel"
)

// APIError is a non-2xx answer from Firecracker, with the request that
// caused it.
type APIError struct {
	Method string
	Path   string
	Status int
	Fault  string // fault_message of the Error definition
}

func (e *APIError) Error() string {
	msg := e.Fault
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	return fmt.Sprintf("%s %s: firecracker answered %d: %s", e.Method, e.Path, e.Status, msg)
}

// Client speaks the Firecracker API over its Unix socket. It is safe for
// concurrent use.
type Client struct {
	conn *unixhttp.Client
}

// NewClient returns a client for the API socket at path.
func NewClient(path string) *Client {
	return &Client{conn: unixhttp.NewClient(path, func(tr *http.Transport) { tr.DisableKeepAlives = true })}
}

// Socket returns the path of the API socket.
func (c *Client) Socket() string { return c.conn.Socket() }

// do sends one request. body is marshalled as JSON when non-nil; out is
// filled from a 2xx answer when non-nil.
func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("%s %s: encoding body: %w", method, path, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://localhost"+path, rd)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.conn.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("%s %s: reading answer: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var fault struct {
			FaultMessage string `json:"fault_message"`
		}
		if json.Unmarshal(data, &fault) != nil || fault.FaultMessage == "" {
			fault.FaultMessage = strings.TrimSpace(string(data))
		}
		return &APIError{Method: method, Path: path, Status: resp.StatusCode, Fault: fault.FaultMessage}
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s: decoding answer: %w", method, path, err)
		}
	}
	return nil
}

// PutMachineConfig sets vCPUs and memory. Pre-boot only.
func (c *Client) PutMachineConfig(ctx context.Context, mc MachineConfig) error {
	return c.do(ctx, http.MethodPut, "/machine-config", mc, nil)
}

// PutBootSource sets kernel, initrd and command line. Pre-boot only.
func (c *Client) PutBootSource(ctx context.Context, bs BootSource) error {
	return c.do(ctx, http.MethodPut, "/boot-source", bs, nil)
}

// PutDrive adds a block device. Pre-boot only.
func (c *Client) PutDrive(ctx context.Context, d DriveConfig) error {
	return c.do(ctx, http.MethodPut, "/drives/"+d.DriveID, d, nil)
}

// PutNetworkInterface adds a virtio-net device backed by a tap. Pre-boot only.
func (c *Client) PutNetworkInterface(ctx context.Context, n NetworkInterface) error {
	return c.do(ctx, http.MethodPut, "/network-interfaces/"+n.IfaceID, n, nil)
}

// PutVsock adds the vsock device. Pre-boot only.
func (c *Client) PutVsock(ctx context.Context, v VsockConfig) error {
	return c.do(ctx, http.MethodPut, "/vsock", v, nil)
}

// PutLogger sends Firecracker's own log to a file.
func (c *Client) PutLogger(ctx context.Context, l LoggerConfig) error {
	return c.do(ctx, http.MethodPut, "/logger", l, nil)
}

// PutMetrics sends Firecracker's metrics to a file.
func (c *Client) PutMetrics(ctx context.Context, m MetricsConfig) error {
	return c.do(ctx, http.MethodPut, "/metrics", m, nil)
}

// Action runs a synchronous action (InstanceStart, SendCtrlAltDel).
func (c *Client) Action(ctx context.Context, actionType string) error {
	return c.do(ctx, http.MethodPut, "/actions", map[string]string{"action_type": actionType}, nil)
}

// PatchVMState sets the microVM state: "Paused" or "Resumed".
func (c *Client) PatchVMState(ctx context.Context, state string) error {
	return c.do(ctx, http.MethodPatch, "/vm", map[string]string{"state": state}, nil)
}

// CreateSnapshot writes the state and memory of a paused microVM.
func (c *Client) CreateSnapshot(ctx context.Context, s SnapshotCreate) error {
	return c.do(ctx, http.MethodPut, "/snapshot/create", s, nil)
}

// LoadSnapshot restores a microVM into a fresh Firecracker process.
func (c *Client) LoadSnapshot(ctx context.Context, s SnapshotLoad) error {
	return c.do(ctx, http.MethodPut, "/snapshot/load", s, nil)
}

// Instance returns GET /.
func (c *Client) Instance(ctx context.Context) (InstanceInfo, error) {
	var info InstanceInfo
	err := c.do(ctx, http.MethodGet, "/", nil, &info)
	return info, err
}

// Version returns the firecracker_version of GET /version.
func (c *Client) Version(ctx context.Context) (string, error) {
	var v struct {
		FirecrackerVersion string `json:"firecracker_version"`
	}
	if err := c.do(ctx, http.MethodGet, "/version", nil, &v); err != nil {
		return "", err
	}
	return v.FirecrackerVersion, nil
}
