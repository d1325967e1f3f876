package api

// ExportImageRequest is the body of POST /v1/images/export: write image
// Name as a bundle (tar.zst of rootfs.ext4 and manifest.json) to Output,
// an absolute path on the daemon's host.
type ExportImageRequest struct {
	Name   string `json:"name"`
	Output string `json:"output"`
}

// ExportImageResult says where the bundle went and its sha256.
type ExportImageResult struct {
	Path   string `json:"path"`
	SHA256 string `json:"sha256"`
}

// ImportImageRequest is the body of POST /v1/images/import: a bundle from
// an absolute path on the daemon's host or an http(s) URL.
type ImportImageRequest struct {
	Source string `json:"source"`
	Name   string `json:"name,omitempty"`   // default: the bundle's name
	SHA256 string `json:"sha256,omitempty"` // checked before the image is kept
}
