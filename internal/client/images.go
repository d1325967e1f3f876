package client

import (
	"context"
	"net/http"

	"banger/internal/api"
)

// ExportImage writes an image as a bundle on the daemon's host.
func (c *Client) ExportImage(ctx context.Context, req api.ExportImageRequest, p Progress) (api.ExportImageResult, error) {
	var out api.ExportImageResult
	return out, c.Stream(ctx, http.MethodPost, "/v1/images/export", req, &out, p)
}

// ImportImage adds an image from a bundle file or URL.
func (c *Client) ImportImage(ctx context.Context, req api.ImportImageRequest, p Progress) (api.Image, error) {
	var out api.Image
	return out, c.Stream(ctx, http.MethodPost, "/v1/images/import", req, &out, p)
}
