// Package catalog is banger's embedded list of named images and how each
// is made: built from the Debian archive with debootstrap, pulled from an
// OCI reference, or fetched as a sha256-pinned bundle. It is data only;
// package image does the making.
package catalog

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"sort"
)

// Kinds of entries.
const (
	Debootstrap = "debootstrap" // Suite, Variant, Packages from a Debian mirror
	OCI         = "oci"         // Ref, an OCI reference
	Bundle      = "bundle"      // URL of a banger bundle (tar.zst) and its SHA256
)

// DefaultImage is the image banger uses when none is named.
const DefaultImage = "debian-bookworm"

// Entry says how one catalog image is made.
type Entry struct {
	Name        string   `json:"name"`
	Description string   `json:"description"`
	Kind        string   `json:"kind"`
	Suite       string   `json:"suite,omitempty"`
	Variant     string   `json:"variant,omitempty"`
	Packages    []string `json:"packages,omitempty"`
	Ref         string   `json:"ref,omitempty"`
	URL         string   `json:"url,omitempty"`
	SHA256      string   `json:"sha256,omitempty"`
	KernelRef   string   `json:"kernel_ref"`
}

//go:embed catalog.json
var raw []byte

var entries = mustParse(raw)

func mustParse(b []byte) map[string]Entry {
	m, err := Parse(b)
	if err != nil {
		panic(err) // the embedded file is checked by TestEmbedded
	}
	return m
}

// Parse reads a catalog file and checks every entry.
func Parse(b []byte) (map[string]Entry, error) {
	var f struct {
		Images []Entry `json:"images"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("catalog: %w", err)
	}
	m := map[string]Entry{}
	for _, e := range f.Images {
		if err := e.check(); err != nil {
			return nil, fmt.Errorf("catalog entry %q: %w", e.Name, err)
		}
		if _, dup := m[e.Name]; dup {
			return nil, fmt.Errorf("catalog entry %q: listed twice", e.Name)
		}
		m[e.Name] = e
	}
	return m, nil
}

func (e Entry) check() error {
	switch {
	case e.Name == "":
		return fmt.Errorf("no name")
	case e.KernelRef == "":
		return fmt.Errorf("no kernel_ref")
	case e.Kind == Debootstrap && e.Suite == "":
		return fmt.Errorf("debootstrap entry without suite")
	case e.Kind == OCI && e.Ref == "":
		return fmt.Errorf("oci entry without ref")
	case e.Kind == Bundle && (e.URL == "" || len(e.SHA256) != 64):
		return fmt.Errorf("bundle entry needs url and a sha256 of 64 hex digits")
	case e.Kind != Debootstrap && e.Kind != OCI && e.Kind != Bundle:
		return fmt.Errorf("unknown kind %q (valid: %s, %s, %s)", e.Kind, Debootstrap, OCI, Bundle)
	}
	return nil
}

// Lookup returns the entry called name.
func Lookup(name string) (Entry, bool) {
	e, ok := entries[name]
	return e, ok
}

// Names lists the catalog's image names, sorted.
func Names() []string {
	out := make([]string, 0, len(entries))
	for n := range entries {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
