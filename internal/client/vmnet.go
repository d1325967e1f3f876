package client

import (
	"context"
	"net/http"

	"banger/internal/api"
)

// SetNet changes a VM's egress policy or isolation (see api.SetNetRequest);
// a running VM gets it at once, a stopped one at its next start.
func (c *Client) SetNet(ctx context.Context, name string, req api.SetNetRequest) (api.VM, error) {
	var out api.VM
	return out, c.Do(ctx, http.MethodPost, path("vms", name, "net"), req, &out)
}
