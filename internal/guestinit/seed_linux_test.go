package guestinit

import (
	"archive/tar"
	"banger/internal/prereq"
	"os"
	"path/filepath"
	"testing"
)

func TestApplySeedOnce(t *testing.T) {
	if os.Geteuid() != 0 {
		prereq.Missing(t, "applying a seed chowns to root; run as root")
	}
	dir := t.TempDir()
	seed := filepath.Join(dir, "seed.tar")
	f, _ := os.Create(seed)
	tw := tar.NewWriter(f)
	tw.WriteHeader(&tar.Header{Name: "root/.ssh", Mode: 0o700, Typeflag: tar.TypeDir})
	tw.WriteHeader(&tar.Header{Name: "root/.ssh/authorized_keys", Mode: 0o600, Size: 4, Typeflag: tar.TypeReg})
	tw.Write([]byte("key\n"))
	tw.Close()
	f.Close()
	root := filepath.Join(dir, "root")
	if err := applySeed(seed, root); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(root, "root/.ssh/authorized_keys")
	st, err := os.Stat(p)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("authorized_keys: %v %v", st, err)
	}
	// The user edits the file in the guest; the same seed does not undo it.
	os.WriteFile(p, []byte("mine\n"), 0o600)
	if err := applySeed(seed, root); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "mine\n" {
		t.Fatalf("seed applied twice: %q", b)
	}
	// A seed entry that climbs out is refused.
	bad := filepath.Join(dir, "bad.tar")
	f, _ = os.Create(bad)
	tw = tar.NewWriter(f)
	tw.WriteHeader(&tar.Header{Name: "../escape", Mode: 0o644, Size: 1, Typeflag: tar.TypeReg})
	tw.Write([]byte("x"))
	tw.Close()
	f.Close()
	if err := applySeed(bad, filepath.Join(dir, "other")); err == nil {
		t.Fatal("a seed entry with .. was accepted")
	}
}
