package image

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// ErrPlatform is returned when a reference has no linux/amd64 image.
var ErrPlatform = errors.New("no linux/amd64 image")

// ErrNoImage is returned when the registry has no such image.
var ErrNoImage = errors.New("image not found in registry")

// want is the only platform banger's guests run.
var want = v1.Platform{OS: "linux", Architecture: "amd64"}

// ParseRef parses an OCI reference. Registries on loopback addresses
// (localhost, 127.0.0.0/8, ::1) may speak plain http.
func ParseRef(ref string) (name.Reference, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return nil, fmt.Errorf("%w: %q is not an image reference: %w", ErrInvalid, ref, err)
	}
	if isLoopback(r.Context().RegistryStr()) {
		r, err = name.ParseReference(ref, name.Insecure)
		if err != nil {
			return nil, fmt.Errorf("%w: %q: %w", ErrInvalid, ref, err)
		}
	}
	return r, nil
}

func isLoopback(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// remoteImage finds the linux/amd64 image of ref. A manifest list
// without one fails with ErrPlatform naming the platforms it has.
func remoteImage(ctx context.Context, ref name.Reference, kc authn.Keychain) (v1.Image, v1.Hash, error) {
	opts := []remote.Option{
		remote.WithContext(ctx), remote.WithAuthFromKeychain(kc),
		remote.WithRetryBackoff(remote.Backoff{Duration: 300 * time.Millisecond, Factor: 2, Steps: 2}),
	}
	desc, err := remote.Get(ref, opts...)
	if err != nil {
		return nil, v1.Hash{}, registryErr(ref, err)
	}
	if desc.MediaType.IsIndex() {
		idx, err := desc.ImageIndex()
		if err != nil {
			return nil, v1.Hash{}, fmt.Errorf("reading index of %s: %w", ref, err)
		}
		im, err := idx.IndexManifest()
		if err != nil {
			return nil, v1.Hash{}, fmt.Errorf("reading index of %s: %w", ref, err)
		}
		var have []string
		for _, m := range im.Manifests {
			if m.Platform == nil {
				continue
			}
			if m.Platform.OS == want.OS && m.Platform.Architecture == want.Architecture {
				img, err := idx.Image(m.Digest)
				if err != nil {
					return nil, v1.Hash{}, registryErr(ref, err)
				}
				return img, m.Digest, nil
			}
			have = append(have, m.Platform.String())
		}
		sort.Strings(have)
		return nil, v1.Hash{}, fmt.Errorf("%w in %s (it has: %s)", ErrPlatform, ref, strings.Join(have, ", "))
	}
	img, err := desc.Image()
	if err != nil {
		return nil, v1.Hash{}, fmt.Errorf("reading %s: %w", ref, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, v1.Hash{}, registryErr(ref, err)
	}
	if (cf.OS != "" && cf.OS != want.OS) || (cf.Architecture != "" && cf.Architecture != want.Architecture) {
		return nil, v1.Hash{}, fmt.Errorf("%w: %s is %s/%s", ErrPlatform, ref, cf.OS, cf.Architecture)
	}
	return img, desc.Digest, nil
}

// registryErr turns "not found" answers into ErrNoImage and keeps the rest.
func registryErr(ref name.Reference, err error) error {
	var te *transport.Error
	if errors.As(err, &te) {
		for _, d := range te.Errors {
			if d.Code == transport.ManifestUnknownErrorCode || d.Code == transport.NameUnknownErrorCode {
				return fmt.Errorf("%w: %s", ErrNoImage, ref)
			}
		}
		if te.StatusCode == 404 {
			return fmt.Errorf("%w: %s", ErrNoImage, ref)
		}
	}
	return fmt.Errorf("fetching %s from %s: %w", ref, ref.Context().RegistryStr(), err)
}

// DefaultName derives an image name from a reference:
// "localhost:5000/team/dev:1" becomes "dev-1".
func DefaultName(ref name.Reference) string {
	repo := ref.Context().RepositoryStr()
	base := repo[strings.LastIndex(repo, "/")+1:]
	var suffix string
	switch r := ref.(type) {
	case name.Tag:
		suffix = r.TagStr()
	case name.Digest:
		suffix = strings.TrimPrefix(r.DigestStr(), "sha256:")
		suffix = suffix[:min(12, len(suffix))]
	}
	n := strings.ToLower(base + "-" + suffix)
	var b strings.Builder
	for _, c := range n {
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' {
			b.WriteRune(c)
		} else {
			b.WriteRune('-')
		}
	}
	out := strings.TrimLeft(b.String(), "._-")
	return out[:min(63, len(out))]
}
