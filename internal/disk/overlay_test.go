package disk

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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

// qemuImg runs qemu-img (or qemu-io) and returns its output.
func qemuTool(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

// The layers CreateOverlay writes are what QEMU reads: qemu-img check
// finds them clean and reports the size, backing and its format given;
// reads fall through to the backing file, writes land in the layer only,
// and a layer over a layer works the same.
func TestCreateOverlayIsValidQCOW2(t *testing.T) {
	for _, tool := range []string{QEMUImg, "qemu-io"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (apt-get install qemu-utils)", tool)
		}
	}
	dir := t.TempDir()
	base := filepath.Join(dir, "base.raw")
	data := make([]byte, 4<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	if err := os.WriteFile(base, data, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, size := range []int64{0, 4<<20 + 1, 16 << 30, 8 << 40} {
		top := filepath.Join(dir, fmt.Sprintf("top-%d.qcow2", size))
		if err := CreateOverlay(t.Context(), base, "raw", top, size); err != nil {
			t.Fatal(err)
		}
		qemuTool(t, QEMUImg, "check", "-q", top)
		var info struct {
			VirtualSize int64  `json:"virtual-size"`
			Format      string `json:"format"`
			Backing     string `json:"backing-filename"`
			BackingFmt  string `json:"backing-filename-format"`
		}
		json.Unmarshal([]byte(qemuTool(t, QEMUImg, "info", "--output=json", top)), &info)
		want := max(size, int64(len(data)))
		want = (want + 511) &^ 511
		if info.VirtualSize != want || info.Format != "qcow2" || info.Backing != base || info.BackingFmt != "raw" {
			t.Errorf("size %d: qemu-img info %+v, want %d bytes over %s (raw)", size, info, want, base)
		}
		if st, _ := os.Stat(top); st.Mode().Perm() != 0o600 || st.Size() > 1<<20+3<<16 {
			t.Errorf("size %d: layer is %d bytes, mode %v", size, st.Size(), st.Mode().Perm())
		}
	}
	top := filepath.Join(dir, "top-0.qcow2")
	// Reads fall through: the layer's contents are the base's.
	qemuTool(t, QEMUImg, "compare", "-f", "raw", "-F", "qcow2", base, top)
	// Writes land in the layer.
	qemuTool(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0xab 65536 65536", top)
	qemuTool(t, QEMUImg, "check", "-q", top)
	if got, _ := os.ReadFile(base); !bytes.Equal(got, data) {
		t.Error("a write to the layer changed its base")
	}
	// A layer over that layer sees the write and the base.
	top2 := filepath.Join(dir, "top2.qcow2")
	if err := CreateOverlay(t.Context(), top, "qcow2", top2, 0); err != nil {
		t.Fatal(err)
	}
	qemuTool(t, QEMUImg, "check", "-q", top2)
	qemuTool(t, QEMUImg, "compare", "-f", "qcow2", "-F", "qcow2", top, top2)
	out := qemuTool(t, "qemu-io", "-f", "qcow2", "-c", "read -P 0xab 65536 65536", "-c", "read -P 0 0 1", top2)
	if strings.Contains(out, "Pattern verification failed") {
		t.Errorf("the layer over a layer reads wrong data:\n%s", out)
	}
	if err := CreateOverlay(t.Context(), base, "vmdk", filepath.Join(dir, "bad.qcow2"), 0); err == nil {
		t.Error("a backing format other than raw or qcow2 was accepted")
	}
	if _, err := os.Stat(filepath.Join(dir, "bad.qcow2")); !os.IsNotExist(err) {
		t.Errorf("a refused overlay left a file: %v", err)
	}
}
