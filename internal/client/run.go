package client

import (
	"context"
	"io"
	"net/http"
	"net/url"

	"banger/internal/api"
)

// SSHInfo returns the address and pinned host key of a VM's sshd.
func (c *Client) SSHInfo(ctx context.Context, vm string) (api.SSHInfo, error) {
	var out api.SSHInfo
	return out, c.Do(ctx, http.MethodGet, path("vms", vm, "ssh"), nil, &out)
}

// PutWorkspace extracts the tar stream r under guestDir in the VM. Modes,
// symlinks and mtimes in the stream are kept.
func (c *Client) PutWorkspace(ctx context.Context, vm, guestDir string, r io.Reader) error {
	q := url.Values{"dir": {guestDir}}
	req, err := c.newRequest(ctx, http.MethodPut, path("vms", vm, "workspace")+"?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	req.Body = io.NopCloser(r)
	req.Header.Set("Content-Type", "application/x-tar")
	resp, err := c.send(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	return resp.Body.Close()
}

// GetWorkspace returns a tar stream of guestDir in the VM. A stream that
// breaks off (the guest's tar failed) ends in an error, not in a short
// archive that looks whole.
func (c *Client) GetWorkspace(ctx context.Context, vm, guestDir string) (io.ReadCloser, error) {
	q := url.Values{"dir": {guestDir}}
	return c.Raw(ctx, http.MethodGet, path("vms", vm, "workspace")+"?"+q.Encode())
}
