package kernel

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"banger/internal/guestinit"
)

// InitrdModules are the modules the initrd loads (with their
// dependencies, which come first): virtio-mmio transport, block, net,
// console (the agent's virtio-serial port), vsock, and ext4 for the root.
// Modules the kernel has built in are skipped.
var InitrdModules = []string{
	"virtio_ring", "virtio", "virtio_mmio", "virtio_blk",
	"failover", "net_failover", "virtio_net", "virtio_console",
	"vsock", "vmw_vsock_virtio_transport_common", "vmw_vsock_virtio_transport",
	"ext4",
}

// moduleTree indexes the modules below lib/modules/<release>.
type moduleTree struct {
	dir     string
	files   map[string]string // normalised name -> path relative to dir
	builtin map[string]bool
}

func readModuleTree(dir string) (*moduleTree, error) {
	t := &moduleTree{dir: dir, files: map[string]string{}, builtin: map[string]bool{}}
	err := filepath.WalkDir(filepath.Join(dir, "kernel"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if name, ok := moduleName(d.Name()); ok && d.Type().IsRegular() {
			rel, _ := filepath.Rel(dir, p)
			t.files[name] = rel
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading module tree: %w", err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "modules.builtin"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	for _, line := range strings.Fields(string(data)) {
		if name, ok := moduleName(path.Base(line)); ok {
			t.builtin[name] = true
		}
	}
	return t, nil
}

// moduleName returns the normalised module name of a .ko[.xz|.zst|.gz] file.
func moduleName(file string) (string, bool) {
	for _, ext := range []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"} {
		if n, ok := strings.CutSuffix(file, ext); ok {
			return guestinit.NormalizeModule(n), true
		}
	}
	return "", false
}

// resolve returns the modules to load for wanted, dependencies first (the
// order modprobe would use), skipping built-in ones. Dependencies are read
// from each module's .modinfo, so a package without modules.dep works.
func (t *moduleTree) resolve(wanted []string) ([]string, error) {
	var order []string
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(name, from string) error
	visit = func(name, from string) error {
		name = guestinit.NormalizeModule(name)
		switch {
		case state[name] == 2 || t.builtin[name]:
			return nil
		case state[name] == 1:
			return fmt.Errorf("module dependency cycle at %s", name)
		}
		rel, ok := t.files[name]
		if !ok {
			if from != "" {
				return fmt.Errorf("module %s (needed by %s) is not in the package", name, from)
			}
			return fmt.Errorf("module %s is neither built in nor in the package", name)
		}
		state[name] = 1
		deps, err := moduleDepends(filepath.Join(t.dir, rel))
		if err != nil {
			return fmt.Errorf("reading module %s: %w", name, err)
		}
		for _, d := range deps {
			if err := visit(d, name); err != nil {
				return err
			}
		}
		state[name] = 2
		order = append(order, name)
		return nil
	}
	for _, w := range wanted {
		if err := visit(w, ""); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// moduleDepends reads the depends= field of a module's .modinfo section.
func moduleDepends(file string) ([]string, error) {
	data, err := readModule(file)
	if err != nil {
		return nil, err
	}
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, errors.New("no .modinfo section")
	}
	info, err := sec.Data()
	if err != nil {
		return nil, err
	}
	for _, kv := range bytes.Split(info, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok {
			if len(v) == 0 {
				return nil, nil
			}
			return strings.Split(string(v), ","), nil
		}
	}
	return nil, nil
}

// readModule returns a module's ELF bytes, decompressing .xz/.zst/.gz.
func readModule(file string) ([]byte, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var r io.Reader
	switch {
	case strings.HasSuffix(file, ".ko"):
		return data, nil
	case strings.HasSuffix(file, ".xz"):
		r, err = xz.NewReader(bytes.NewReader(data))
	case strings.HasSuffix(file, ".gz"):
		r, err = gzip.NewReader(bytes.NewReader(data))
	case strings.HasSuffix(file, ".zst"):
		var d *zstd.Decoder
		if d, err = zstd.NewReader(bytes.NewReader(data)); err == nil {
			defer d.Close()
			r = d
		}
	default:
		err = errors.New("not a kernel module")
	}
	if err != nil {
		return nil, err
	}
	return io.ReadAll(r)
}

// buildInitrd writes an uncompressed cpio newc initrd to dst: /init is
// the agent binary, /banger-initrd.json lists the modules in load order,
// and the modules themselves (decompressed) sit in /lib/modules/<release>.
func buildInitrd(ctx context.Context, dst, agentBin, modDir, release string) error {
	if err := checkStaticELF(agentBin); err != nil {
		return fmt.Errorf("agent binary %s: %w", agentBin, err)
	}
	tree, err := readModuleTree(modDir)
	if err != nil {
		return err
	}
	names, err := tree.resolve(InitrdModules)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	defer out.Close()
	bw := bufio.NewWriterSize(out, 1<<20)
	w := newCpioWriter(bw)
	kdir := "lib/modules/" + release
	for _, d := range []string{"dev", "proc", "sys", "newroot", "lib", "lib/modules", kdir} {
		if err := w.Dir(d, 0o755); err != nil {
			return err
		}
	}
	if err := w.CharDev("dev/console", 0o600, 5, 1); err != nil {
		return err
	}
	cfg := guestinit.Config{Release: release}
	for _, n := range names {
		if err := ctx.Err(); err != nil {
			return err
		}
		data, err := readModule(filepath.Join(modDir, tree.files[n]))
		if err != nil {
			return fmt.Errorf("reading module %s: %w", n, err)
		}
		p := kdir + "/" + n + ".ko"
		if err := w.File(p, 0o644, bytes.NewReader(data), int64(len(data))); err != nil {
			return err
		}
		cfg.Modules = append(cfg.Modules, guestinit.Module{Name: n, Path: "/" + p})
	}
	js, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	if err := w.File(guestinit.ConfigPath, 0o644, bytes.NewReader(js), int64(len(js))); err != nil {
		return err
	}
	if err := addFile(w, "init", 0o755, agentBin); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	if err := out.Sync(); err != nil {
		return err
	}
	return out.Close()
}

func addFile(w *cpioWriter, name string, perm uint32, src string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	return w.File(name, perm, f, st.Size())
}

// checkStaticELF reports an error unless file is a static x86-64 ELF
// executable: the initrd has no dynamic loader.
func checkStaticELF(file string) error {
	f, err := elf.Open(file)
	if err != nil {
		return fmt.Errorf("not an ELF executable: %w", err)
	}
	defer f.Close()
	if f.Machine != elf.EM_X86_64 {
		return fmt.Errorf("built for %s, not x86-64", f.Machine)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return errors.New("dynamically linked; build it with CGO_ENABLED=0")
		}
	}
	return nil
}
