package client

import (
	"context"
	"net/http"
	"net/url"

	"banger/internal/api"
)

// Ports lists vm's port forwards.
func (c *Client) Ports(ctx context.Context, vm string) ([]api.PortForward, error) {
	var out []api.PortForward
	err := c.Do(ctx, http.MethodGet, path("vms", vm, "ports"), nil, &out)
	return out, err
}

// AddPorts adds port forwards in -p syntax to vm, all or none, and
// returns all of vm's forwards.
func (c *Client) AddPorts(ctx context.Context, vm string, specs []string) ([]api.PortForward, error) {
	var out []api.PortForward
	err := c.Do(ctx, http.MethodPost, path("vms", vm, "ports"), api.AddPortsRequest{Ports: specs}, &out)
	return out, err
}

// RemovePorts removes the port forwards specs name ([HOST_ADDR:]HOST_PORT[/proto],
// or the -p spec) from vm, all or none, and returns the forwards left.
func (c *Client) RemovePorts(ctx context.Context, vm string, specs []string) ([]api.PortForward, error) {
	var out []api.PortForward
	q := url.Values{"spec": specs}
	err := c.Do(ctx, http.MethodDelete, path("vms", vm, "ports")+"?"+q.Encode(), nil, &out)
	return out, err
}
