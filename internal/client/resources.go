package client

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"banger/internal/api"
)

// Progress receives progress and log events of long operations.
type Progress func(api.Event)

// list, get and stream are the calls that VMs, images and kernels make
// alike: GET /v1/KIND, GET /v1/KIND/NAME, and a POST whose answer is a
// progress stream ending in the resource.
func list[T any](ctx context.Context, c *Client, kind string) ([]T, error) {
	var out []T
	return out, c.Do(ctx, http.MethodGet, path(kind), nil, &out)
}

func get[T any](ctx context.Context, c *Client, kind, name string) (T, error) {
	var out T
	return out, c.Do(ctx, http.MethodGet, path(kind, name), nil, &out)
}

func stream[T any](ctx context.Context, c *Client, p string, req any, pr Progress) (T, error) {
	var out T
	return out, c.Stream(ctx, http.MethodPost, p, req, &out, pr)
}

// ListVMs returns all VMs.
func (c *Client) ListVMs(ctx context.Context) ([]api.VM, error) { return list[api.VM](ctx, c, "vms") }

// VM returns one VM by name or id.
func (c *Client) VM(ctx context.Context, name string) (api.VM, error) {
	return get[api.VM](ctx, c, "vms", name)
}

// CreateVM creates (and, unless NoStart, starts) a VM.
func (c *Client) CreateVM(ctx context.Context, req api.CreateVMRequest, p Progress) (api.VM, error) {
	return stream[api.VM](ctx, c, path("vms"), req, p)
}

// StartVM boots a stopped VM and waits for its agent.
func (c *Client) StartVM(ctx context.Context, name string, req api.StartVMRequest, p Progress) (api.VM, error) {
	return stream[api.VM](ctx, c, path("vms", name, "start"), req, p)
}

// StopVM stops a VM: gracefully, then by force after the timeout.
func (c *Client) StopVM(ctx context.Context, name string, req api.StopVMRequest) (api.VM, error) {
	var out api.VM
	return out, c.Do(ctx, http.MethodPost, path("vms", name, "stop"), req, &out)
}

// DeleteVM stops (force skips the graceful part) and deletes a VM.
func (c *Client) DeleteVM(ctx context.Context, name string, force bool) error {
	p := path("vms", name)
	if force {
		p += "?force=1"
	}
	return c.Do(ctx, http.MethodDelete, p, nil, nil)
}

// Logs returns the VM's serial console log; with follow, the stream stays
// open and carries new output until ctx is done.
func (c *Client) Logs(ctx context.Context, name string, follow bool) (io.ReadCloser, error) {
	q := url.Values{}
	q.Set("follow", strconv.FormatBool(follow))
	return c.Raw(ctx, http.MethodGet, path("vms", name, "logs")+"?"+q.Encode())
}

// ListKernels returns the kernel bundles.
func (c *Client) ListKernels(ctx context.Context) ([]api.Kernel, error) {
	return list[api.Kernel](ctx, c, "kernels")
}

// Kernel returns one kernel bundle.
func (c *Client) Kernel(ctx context.Context, name string) (api.Kernel, error) {
	return get[api.Kernel](ctx, c, "kernels", name)
}

// PullKernel builds a catalog kernel from the Debian archive.
func (c *Client) PullKernel(ctx context.Context, req api.PullKernelRequest, p Progress) (api.Kernel, error) {
	return stream[api.Kernel](ctx, c, path("kernels", "pull"), req, p)
}

// ImportKernel builds a kernel bundle from a local Debian .deb.
func (c *Client) ImportKernel(ctx context.Context, req api.ImportKernelRequest, p Progress) (api.Kernel, error) {
	return stream[api.Kernel](ctx, c, path("kernels", "import"), req, p)
}

// RegisterKernel adopts a plain kernel image and optional initrd.
func (c *Client) RegisterKernel(ctx context.Context, req api.RegisterKernelRequest) (api.Kernel, error) {
	var out api.Kernel
	return out, c.Do(ctx, http.MethodPost, "/v1/kernels/register", req, &out)
}

// DeleteKernel removes a kernel bundle no VM uses.
func (c *Client) DeleteKernel(ctx context.Context, name string) error {
	return c.Do(ctx, http.MethodDelete, path("kernels", name), nil, nil)
}

// ListImages returns the images.
func (c *Client) ListImages(ctx context.Context) ([]api.Image, error) {
	return list[api.Image](ctx, c, "images")
}

// Image returns one image.
func (c *Client) Image(ctx context.Context, name string) (api.Image, error) {
	return get[api.Image](ctx, c, "images", name)
}

// RegisterImage adopts an existing ext4 rootfs.
func (c *Client) RegisterImage(ctx context.Context, req api.RegisterImageRequest, p Progress) (api.Image, error) {
	return stream[api.Image](ctx, c, path("images", "register"), req, p)
}

// WarmImage makes the image's warm snapshot ahead of time (or returns
// the one there is).
func (c *Client) WarmImage(ctx context.Context, name string, p Progress) (api.Snapshot, error) {
	return stream[api.Snapshot](ctx, c, path("images", name, "warm"), struct{}{}, p)
}

// DeleteImage removes an image no VM uses.
func (c *Client) DeleteImage(ctx context.Context, name string) error {
	return c.Do(ctx, http.MethodDelete, path("images", name), nil, nil)
}

// PullImage makes an image from a catalog name or an OCI reference.
func (c *Client) PullImage(ctx context.Context, req api.PullImageRequest, p Progress) (api.Image, error) {
	return stream[api.Image](ctx, c, path("images", "pull"), req, p)
}
