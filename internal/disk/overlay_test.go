package disk

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

func TestCreateOverlayAndBacking(t *testing.T) {
	if _, err := exec.LookPath(QEMUImg); err != nil {
		t.Skip("qemu-img not installed")
	}
	dir := t.TempDir()
	base := filepath.Join(dir, "base.raw")
	if err := os.WriteFile(base, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, q, err := Backing(base); err != nil || q || b != "" {
		t.Fatalf("Backing(raw) = %q, %v, %v; want not qcow2", b, q, err)
	}
	top := filepath.Join(dir, "top.qcow2")
	if err := CreateOverlay(t.Context(), base, "raw", top, 8<<30); err != nil {
		t.Fatal(err)
	}
	if b, q, err := Backing(top); err != nil || !q || b != base {
		t.Fatalf("Backing(top) = %q, %v, %v; want %q", b, q, err, base)
	}
	st, err := os.Stat(top)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() > 1<<20 {
		t.Errorf("an 8 GiB overlay takes %d bytes; want a small file", st.Size())
	}
	if err := CreateOverlay(t.Context(), base, "raw", top, 0); err == nil {
		t.Error("CreateOverlay over an existing file succeeded")
	}
	if err := CreateOverlay(t.Context(), "base.raw", "raw", filepath.Join(dir, "x.qcow2"), 0); err == nil {
		t.Error("a relative backing name was accepted")
	}
}
