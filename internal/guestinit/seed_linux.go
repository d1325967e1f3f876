package guestinit

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"banger/internal/atomicfile"
)

// seedMarker records the hash of the last seed applied, so files the user
// changed in the guest are not overwritten at every boot.
const seedMarker = "/var/lib/banger/seed.sha256"

// applySeed copies the per-VM files banger made at create time (SSH host
// key, authorized_keys, sshd drop-in) from the seed drive dev into the new
// root. The drive holds a plain tar stream: writing it costs the host no
// filesystem work. It runs once per seed.
func applySeed(dev, root string) error {
	if err := waitDevice(dev, 5*time.Second); err != nil {
		return fmt.Errorf("seed drive %s did not appear", dev)
	}
	f, err := os.Open(dev)
	if err != nil {
		return fmt.Errorf("opening seed drive %s: %w", dev, err)
	}
	defer f.Close()
	h := sha256.New()
	tr := tar.NewReader(io.TeeReader(f, h))
	type entry struct {
		hdr  *tar.Header
		data []byte
	}
	var entries []entry
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("reading seed: %w", err)
		}
		data, err := io.ReadAll(io.LimitReader(tr, 1<<20))
		if err != nil {
			return fmt.Errorf("reading seed entry %s: %w", hdr.Name, err)
		}
		entries = append(entries, entry{hdr, data})
	}
	sum := hex.EncodeToString(h.Sum(nil))
	marker := filepath.Join(root, seedMarker)
	if old, err := os.ReadFile(marker); err == nil && strings.TrimSpace(string(old)) == sum {
		return nil
	}
	for _, e := range entries {
		if err := writeSeedEntry(root, e.hdr, e.data); err != nil {
			return err
		}
	}
	os.MkdirAll(filepath.Dir(marker), 0o755)
	return os.WriteFile(marker, []byte(sum+"\n"), 0o644)
}

func writeSeedEntry(root string, hdr *tar.Header, data []byte) error {
	rel := filepath.Clean("/" + hdr.Name)
	if rel == "/" || strings.Contains(hdr.Name, "..") {
		return fmt.Errorf("seed entry %q is not a plain path", hdr.Name)
	}
	name := filepath.Join(root, rel)
	mode := os.FileMode(hdr.Mode).Perm()
	switch hdr.Typeflag {
	case tar.TypeDir:
		if err := os.MkdirAll(name, mode); err != nil {
			return err
		}
	case tar.TypeReg:
		if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
			return err
		}
		if err := atomicfile.WriteFile(name, data, mode); err != nil {
			return err
		}
	default:
		return fmt.Errorf("seed entry %q: unsupported type %c", hdr.Name, hdr.Typeflag)
	}
	if err := os.Chmod(name, mode); err != nil {
		return err
	}
	return os.Lchown(name, hdr.Uid, hdr.Gid)
}
