package daemon

import (
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/disk"
	"banger/internal/ext4"
	"banger/internal/image"
	"banger/internal/kernel"
	"banger/internal/store"
	"banger/internal/vmm"
	"banger/internal/vmm/vmmtest"
)

// The layer tests run create, start and delete over a MemDriver that
// takes qcow2 (as QEMU does), with real images (mkfs.ext4), real
// qemu-img layers and a real SQLite state.

func needLayerTools(t *testing.T) {
	t.Helper()
	for _, tool := range []string{disk.QEMUImg, "mkfs.ext4", "resize2fs"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (apt-get install qemu-utils e2fsprogs)", tool)
		}
	}
}

// layerRig is a lifeRig whose manager has image and kernel stores and the
// user key create needs.
func layerRig(t *testing.T, layers bool) *lifeRig {
	t.Helper()
	return layerRigWith(t, vmmtest.MemOptions{Layers: layers})
}

func layerRigWith(t *testing.T, opts vmmtest.MemOptions) *lifeRig {
	t.Helper()
	needLayerTools(t)
	r := newLifeRig(t, opts)
	r.m.images = &image.Store{Dir: filepath.Join(r.dir, "images")}
	r.m.kernels = &kernel.Store{Dir: filepath.Join(r.dir, "kernels")}
	r.m.cfg.UserSSHKey = filepath.Join(r.dir, "id_ed25519")
	kdir := filepath.Join(r.dir, "kernels", "k")
	os.MkdirAll(kdir, 0o755)
	os.WriteFile(filepath.Join(kdir, "vmlinux"), []byte("kernel"), 0o644)
	os.WriteFile(filepath.Join(kdir, "manifest.json"), []byte(`{"name":"k","kernel":"vmlinux"}`), 0o644)
	return r
}

// addImage puts an ext4 image of size bytes called name in the rig's
// image store, as a pull or register leaves one; mkfsOpts go to
// mkfs.ext4 (say -O sparse_super2, as tar2ext4 builds).
func (r *lifeRig) addImage(t *testing.T, name string, size int64, mkfsOpts ...string) image.Image {
	t.Helper()
	dir := filepath.Join(r.dir, "images", name)
	os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	rootfs := filepath.Join(dir, "rootfs.ext4")
	if err := os.WriteFile(rootfs, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(rootfs, size); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"-q", "-F"}, mkfsOpts...)
	if out, err := exec.Command("mkfs.ext4", append(args, rootfs)...).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	im := image.Image{Name: name, Source: "test", SizeBytes: size, KernelRef: "k", CreatedAt: time.Now().UTC()}
	b, _ := json.Marshal(im)
	if err := os.WriteFile(filepath.Join(dir, "manifest.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := r.m.images.Get(name)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func (r *lifeRig) create(t *testing.T, req api.CreateVMRequest) (api.VM, error) {
	t.Helper()
	return r.m.create(t.Context(), req, nop)
}

func (r *lifeRig) mustCreate(t *testing.T, req api.CreateVMRequest) (api.VM, store.VM) {
	t.Helper()
	out, err := r.create(t, req)
	if err != nil {
		t.Fatal(err)
	}
	return out, r.state(t, out.Name)
}

// layerFiles lists the files of the rig's layer store (layers and
// bases), relative to it.
func (r *lifeRig) layerFiles(t *testing.T) []string {
	t.Helper()
	var out []string
	root := r.m.layers.dir
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(root, p)
			out = append(out, rel)
		}
		return nil
	})
	return out
}

// virtualSize is the disk size qemu-img reports for a qcow2 file.
func virtualSize(t *testing.T, path string) int64 {
	t.Helper()
	out, err := exec.Command(disk.QEMUImg, "info", "-U", "--output=json", path).Output()
	if err != nil {
		t.Fatalf("qemu-img info %s: %v", path, err)
	}
	var info struct {
		VirtualSize int64 `json:"virtual-size"`
	}
	json.Unmarshal(out, &info)
	return info.VirtualSize
}

// A VM of a driver that takes qcow2 gets a layer over a hard link to its
// image's rootfs: nothing is copied, the disk has the VM's size, and the
// VMM is given the layer as a qcow2 root drive.
func TestLayerCreateIsAnOverlay(t *testing.T) {
	r := layerRig(t, true)
	im := r.addImage(t, "deb", 64<<20)
	out, v := r.mustCreate(t, api.CreateVMRequest{Name: "one", Image: "deb", DiskBytes: 1 << 30, NoStart: true})
	if v.Layer == "" || out.DiskMethod != disk.MethodOverlay {
		t.Fatalf("layer %q, disk method %q; want a layer and %q", v.Layer, out.DiskMethod, disk.MethodOverlay)
	}
	layer := r.m.layers.path(v.Layer)
	if out.Disk != layer {
		t.Errorf("vm inspect disk %q, want the layer %q", out.Disk, layer)
	}
	if _, err := os.Stat(filepath.Join(v.Dir, rootDiskFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a raw disk was made in the VM's directory too: %v", err)
	}
	backing, isQCOW2, err := disk.Backing(layer)
	if err != nil || !isQCOW2 {
		t.Fatalf("layer %s: qcow2 %v, %v", layer, isQCOW2, err)
	}
	if filepath.Dir(backing) != r.m.layers.baseDir() {
		t.Errorf("layer's backing %s is not a base of the layer store", backing)
	}
	bst, _ := os.Stat(backing)
	ist, _ := os.Stat(im.Rootfs)
	if !os.SameFile(bst, ist) {
		t.Errorf("base %s is not a link to the image's rootfs", backing)
	}
	if got := virtualSize(t, layer); got != 1<<30 {
		t.Errorf("layer's virtual size %d, want the VM's disk, %d", got, 1<<30)
	}
	if st, _ := os.Stat(layer); st.Size() > 1<<20 || st.Mode().Perm() != 0o600 {
		t.Errorf("layer is %d bytes, mode %v; want a small private file", st.Size(), st.Mode().Perm())
	}

	if _, err := r.m.start(t.Context(), "one", 5*time.Second, nop); err != nil {
		t.Fatal(err)
	}
	spec := r.d.Machine(v.ID).Spec()
	if root := spec.Drives[0]; root.Path != layer || root.Format != vmm.FormatQCOW2 || !root.Root || root.ReadOnly {
		t.Errorf("root drive %+v, want the layer as a writable qcow2 root", root)
	}
	if !strings.HasPrefix(spec.Cmdline, "root=/dev/vda ") {
		t.Errorf("cmdline %q", spec.Cmdline)
	}
}

// Two VMs of one image share its base; deleting a VM removes its layer
// (only), the base stays while the image does, and goes with the image.
func TestLayerRemovedWithItsVM(t *testing.T) {
	r := layerRig(t, true)
	r.addImage(t, "deb", 64<<20)
	_, a := r.mustCreate(t, api.CreateVMRequest{Name: "a", Image: "deb", NoStart: true})
	_, b := r.mustCreate(t, api.CreateVMRequest{Name: "b", Image: "deb", NoStart: true})
	if files := r.layerFiles(t); len(files) != 3 {
		t.Fatalf("layer store after two creates: %v, want two layers and one base", files)
	}
	if err := r.m.delete(t.Context(), "a", false); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(r.m.layers.path(a.Layer)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("deleted vm's layer: %v, want it gone", err)
	}
	if _, err := os.Stat(r.m.layers.path(b.Layer)); err != nil {
		t.Errorf("the other vm's layer: %v", err)
	}
	if err := r.m.delete(t.Context(), "b", false); err != nil {
		t.Fatal(err)
	}
	if files := r.layerFiles(t); len(files) != 1 || !strings.HasPrefix(files[0], "base/deb@") {
		t.Errorf("layer store with no VMs: %v, want the image's base only", files)
	}
	if err := r.m.images.Delete("deb"); err != nil {
		t.Fatal(err)
	}
	r.m.gcLayers(t.Context(), false)
	if files := r.layerFiles(t); len(files) != 0 {
		t.Errorf("layer store after the image went: %v, want empty", files)
	}
}

// A replaced image (pull --refresh) does not change the disk of a VM made
// from the one before: its base is a link to the old file, which stays
// until no layer builds on it.
func TestLayerSurvivesImageReplace(t *testing.T) {
	r := layerRig(t, true)
	r.addImage(t, "deb", 64<<20)
	_, old := r.mustCreate(t, api.CreateVMRequest{Name: "old", Image: "deb", NoStart: true})
	oldBase, _, _ := disk.Backing(r.m.layers.path(old.Layer))
	r.addImage(t, "deb", 96<<20) // a new file and stamp under the same name
	_, v := r.mustCreate(t, api.CreateVMRequest{Name: "new", Image: "deb", NoStart: true})
	newBase, _, _ := disk.Backing(r.m.layers.path(v.Layer))
	if newBase == oldBase {
		t.Fatalf("the VM of the new image builds on the old base %s", oldBase)
	}
	sb, err := ext4.ReadSuperFile(oldBase)
	if err != nil || sb.Size() != 64<<20 {
		t.Errorf("the old VM's base: %d bytes (%v), want the old image's 64 MiB", sb.Size(), err)
	}
	r.m.gcLayers(t.Context(), false)
	if _, err := os.Stat(oldBase); err != nil {
		t.Errorf("gc removed the base a VM builds on: %v", err)
	}
	if err := r.m.delete(t.Context(), "old", false); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(oldBase); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("base of the replaced image with no VM left: %v, want it gone", err)
	}
	if _, err := os.Stat(newBase); err != nil {
		t.Errorf("the live image's base: %v", err)
	}
}

// An image the guest cannot grow online (sparse_super2, as tar2ext4 makes
// every pulled image) gets a base grown on the host by resize2fs, built
// once per size and shared by the VMs of that size.
func TestLayerGrownBaseForSparseSuper2(t *testing.T) {
	r := layerRig(t, true)
	im := r.addImage(t, "t2e", 64<<20, "-O", "sparse_super2")
	if sb, _ := ext4.ReadSuperFile(im.Rootfs); sb.OnlineGrowable() == nil {
		t.Skip("this mkfs.ext4 made no sparse_super2 filesystem")
	}
	bases := map[string]bool{}
	for _, c := range []struct {
		name string
		size int64
	}{{"g1", 256 << 20}, {"g2", 256 << 20}, {"g3", 128 << 20}} {
		_, v := r.mustCreate(t, api.CreateVMRequest{Name: c.name, Image: "t2e", DiskBytes: c.size, NoStart: true})
		base, _, err := disk.Backing(r.m.layers.path(v.Layer))
		if err != nil {
			t.Fatal(err)
		}
		bases[base] = true
		sb, err := ext4.ReadSuperFile(base)
		if err != nil || sb.Size() != c.size {
			t.Errorf("%s: base filesystem is %d bytes (%v), want %d", c.name, sb.Size(), err, c.size)
		}
		if got := virtualSize(t, r.m.layers.path(v.Layer)); got != c.size {
			t.Errorf("%s: layer's virtual size %d, want %d", c.name, got, c.size)
		}
	}
	if len(bases) != 2 {
		t.Errorf("bases %v: want one per size, two", bases)
	}
	if sb, _ := ext4.ReadSuperFile(im.Rootfs); sb.Size() != 64<<20 {
		t.Errorf("the image itself changed: %d bytes", sb.Size())
	}
	// With --disk the image's size it needs no growing: a link base.
	_, v := r.mustCreate(t, api.CreateVMRequest{Name: "same", Image: "t2e", DiskBytes: 64 << 20, NoStart: true})
	base, _, _ := disk.Backing(r.m.layers.path(v.Layer))
	bst, _ := os.Stat(base)
	ist, _ := os.Stat(im.Rootfs)
	if !os.SameFile(bst, ist) {
		t.Errorf("a VM of the image's own size builds on %s, not a link to the image", base)
	}
}

// A driver that takes raw disks only (Firecracker) gets a copy of the
// image in the VM's directory, as before layers.
func TestLayerRawDriverCopies(t *testing.T) {
	r := layerRig(t, false)
	r.addImage(t, "deb", 64<<20)
	out, v := r.mustCreate(t, api.CreateVMRequest{Name: "fc", Image: "deb", NoStart: true})
	if v.Layer != "" || (out.DiskMethod != disk.MethodReflink && out.DiskMethod != disk.MethodSparse) {
		t.Errorf("layer %q, disk method %q; want a raw copy", v.Layer, out.DiskMethod)
	}
	if out.Disk != filepath.Join(v.Dir, rootDiskFile) || !fileExists(out.Disk) {
		t.Errorf("disk %q, want the raw file in the VM's directory", out.Disk)
	}
	if files := r.layerFiles(t); len(files) != 0 {
		t.Errorf("layer store: %v, want nothing", files)
	}
}

// A create whose layer cannot be made (the image's file is gone from a
// damaged store) fails naming the file, and leaves no VM, directory,
// layer or base.
func TestLayerCreateFailsCleanly(t *testing.T) {
	r := layerRig(t, true)
	im := r.addImage(t, "deb", 64<<20)
	if err := os.Remove(im.Rootfs); err != nil {
		t.Fatal(err)
	}
	_, err := r.create(t, api.CreateVMRequest{Name: "x", Image: "deb", NoStart: true})
	if err == nil || !strings.Contains(err.Error(), im.Rootfs) || !strings.Contains(err.Error(), `vm "x"`) {
		t.Fatalf("create over a missing image file: %v, want an error naming the vm and the file", err)
	}
	if _, err := r.st.VMByName(t.Context(), "x"); !errors.Is(err, store.ErrNotExist) {
		t.Errorf("the failed vm's row: %v, want none", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(r.dir, "vms")); len(ents) != 0 {
		t.Errorf("%d vm directories left", len(ents))
	}
	if files := r.layerFiles(t); len(files) != 0 {
		t.Errorf("left in the layer store: %v", files)
	}
}

// A daemon killed mid-create or mid-delete left layers no row names,
// half-built bases and bases of images that are gone: the next start
// removes them, and keeps what VMs build on.
func TestLayerCrashCleanupAtStart(t *testing.T) {
	r := layerRig(t, true)
	r.addImage(t, "deb", 64<<20)
	_, keep := r.mustCreate(t, api.CreateVMRequest{Name: "keep", Image: "deb", NoStart: true})
	keepBase, _, _ := disk.Backing(r.m.layers.path(keep.Layer))
	// A VM the daemon was making when it died: its row says creating.
	_, half := r.mustCreate(t, api.CreateVMRequest{Name: "half", Image: "deb", NoStart: true})
	half.State = api.StateCreating
	if err := r.st.UpdateVM(t.Context(), half); err != nil {
		t.Fatal(err)
	}
	dir := r.m.layers.dir
	stray := []string{
		filepath.Join(dir, newLayerName()),                        // a layer whose row is gone
		filepath.Join(dir, "base", tmpPrefix+"deb@1-999.raw-abc"), // a grown base being built
		filepath.Join(dir, "base", "gone@1234.raw"),               // a base of an image deleted since
		filepath.Join(dir, "base", "deb@1234-268435456.raw"),      // a grown base of a replaced image
		filepath.Join(dir, tmpPrefix+"x.qcow2"),                   // anything being made
	}
	for _, p := range stray {
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	other := filepath.Join(dir, "notes.txt") // not banger's: left alone
	os.WriteFile(other, nil, 0o600)

	m := r.manager(r.d.Restart())
	m.images, m.kernels = r.m.images, r.m.kernels
	if err := m.adoptAll(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, p := range append(stray, m.layers.path(half.Layer)) {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after a restart: %v, want it removed", p, err)
		}
	}
	for _, p := range []string{m.layers.path(keep.Layer), keepBase, other} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s after a restart: %v, want it kept", p, err)
		}
	}
	if _, err := r.st.VMByName(t.Context(), "half"); !errors.Is(err, store.ErrNotExist) {
		t.Errorf("half-created vm: %v, want it removed", err)
	}
}

// gc keeps every base when a layer's header cannot be read, rather than
// guess which base it needs.
func TestLayerGCKeepsBasesOnUnreadableChain(t *testing.T) {
	dir := t.TempDir()
	l := &layerStore{dir: dir, log: slog.New(slog.DiscardHandler)}
	os.MkdirAll(l.baseDir(), 0o700)
	base := filepath.Join(l.baseDir(), "gone@1.raw")
	os.WriteFile(base, nil, 0o600)
	// A qcow2 magic with a backing name far too long: a corrupt header.
	bad := []byte{'Q', 'F', 'I', 0xfb, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 32, 0xff, 0xff, 0xff, 0xff}
	os.WriteFile(l.path("bad.qcow2"), bad, 0o600)
	l.gc([]string{"bad.qcow2"}, nil, false)
	if _, err := os.Stat(base); err != nil {
		t.Errorf("base with an unreadable chain in use: %v, want it kept", err)
	}
	l.gc(nil, nil, false)
	if _, err := os.Stat(base); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("base with nothing in use: %v, want it removed", err)
	}
}
