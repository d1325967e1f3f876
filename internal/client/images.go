package client

import (
	"context"

	"banger/internal/api"
)

// ExportImage writes an image as a bundle on the daemon's host.
func (c *Client) ExportImage(ctx context.Context, req api.ExportImageRequest, p Progress) (api.ExportImageResult, error) {
	return stream[api.ExportImageResult](ctx, c, path("images", "export"), req, p)
}

// ImportImage adds an image from a bundle file or URL.
func (c *Client) ImportImage(ctx context.Context, req api.ImportImageRequest, p Progress) (api.Image, error) {
	return stream[api.Image](ctx, c, path("images", "import"), req, p)
}
