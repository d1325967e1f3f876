package client

import (
	"context"
	"net/http"

	"banger/internal/api"
)

// PauseVM stops a running VM's vCPUs.
func (c *Client) PauseVM(ctx context.Context, name string) (api.VM, error) {
	var out api.VM
	return out, c.Do(ctx, http.MethodPost, path("vms", name, "pause"), struct{}{}, &out)
}

// ResumeVM lets a paused VM's vCPUs run again.
func (c *Client) ResumeVM(ctx context.Context, name string) (api.VM, error) {
	var out api.VM
	return out, c.Do(ctx, http.MethodPost, path("vms", name, "resume"), struct{}{}, &out)
}

// SnapshotVM takes a snapshot (memory and disk) of a running VM.
func (c *Client) SnapshotVM(ctx context.Context, name string, req api.SnapshotVMRequest) (api.Snapshot, error) {
	var out api.Snapshot
	return out, c.Do(ctx, http.MethodPost, path("vms", name, "snapshot"), req, &out)
}

// ForkVM snapshots a running VM and makes a new VM from the snapshot.
func (c *Client) ForkVM(ctx context.Context, name string, req api.ForkVMRequest, p Progress) (api.VM, error) {
	return stream[api.VM](ctx, c, path("vms", name, "fork"), req, p)
}

// ListSnapshots returns all snapshots.
func (c *Client) ListSnapshots(ctx context.Context) ([]api.Snapshot, error) {
	return list[api.Snapshot](ctx, c, "snapshots")
}

// Snapshot returns one snapshot by name or id.
func (c *Client) Snapshot(ctx context.Context, name string) (api.Snapshot, error) {
	return get[api.Snapshot](ctx, c, "snapshots", name)
}

// DeleteSnapshot deletes a snapshot nothing depends on.
func (c *Client) DeleteSnapshot(ctx context.Context, name string) error {
	return c.Do(ctx, http.MethodDelete, path("snapshots", name), nil, nil)
}
