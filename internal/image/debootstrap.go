package image

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/catalog"
)

// CatalogOptions says how to make a catalog image.
type CatalogOptions struct {
	Name      string // image name; "" means the entry's name
	Mirror    string // Debian mirror for debootstrap entries (required for them)
	SizeBytes int64
	CacheDir  string // OCI blob cache, for oci entries
	Progress  Progress
}

// PullCatalog makes the catalog image e, replacing an image of that name
// (whether to pull at all is the caller's choice). Debootstrap entries
// are built from the Debian archive at o.Mirror; oci entries are pulled;
// bundle entries are fetched and checked against their sha256.
func (s *Store) PullCatalog(ctx context.Context, e catalog.Entry, o CatalogOptions) (Image, error) {
	if o.Progress == nil {
		o.Progress = func(string, int64, int64) {}
	}
	if o.Name == "" {
		o.Name = e.Name
	}
	switch e.Kind {
	case catalog.OCI:
		return s.PullOCI(ctx, PullOptions{Ref: e.Ref, Name: o.Name, KernelRef: e.KernelRef, SizeBytes: o.SizeBytes,
			CacheDir: o.CacheDir, Progress: o.Progress})
	case catalog.Bundle:
		return s.ImportURL(ctx, e.URL, ImportOptions{Name: o.Name, SHA256: e.SHA256, Replace: true, Progress: o.Progress})
	}
	if o.Mirror == "" {
		return Image{}, fmt.Errorf("%w: no Debian mirror for %s", ErrInvalid, e.Name)
	}
	bi := buildInfo{Source: "debootstrap " + e.Suite + " " + o.Mirror, KernelRef: e.KernelRef, SizeBytes: o.SizeBytes}
	return s.build(ctx, o.Name, func(ctx context.Context, r *rootfs, stage string) ([]layerSource, error) {
		tree := filepath.Join(stage, "tree")
		if err := os.Mkdir(tree, 0o755); err != nil {
			return nil, err
		}
		if err := Debootstrap(ctx, e, o.Mirror, tree, o.Progress); err != nil {
			return nil, err
		}
		o.Progress("reading the tree", 0, 0)
		return nil, r.addHostTree(ctx, tree)
	}, bi, o.Progress)
}

// BuildCatalogBundle makes the catalog image e without a daemon, in a
// temporary store beside out, and writes it as a bundle to out. It returns
// the bundle's sha256. CI uses it where the mirror is reachable.
func BuildCatalogBundle(ctx context.Context, e catalog.Entry, mirror, agentBin, out string, progress Progress) (string, error) {
	work, err := os.MkdirTemp(filepath.Dir(out), ".banger-build-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(work)
	st := &Store{Dir: work, AgentBin: agentBin}
	if _, err := st.PullCatalog(ctx, e, CatalogOptions{Mirror: mirror, Progress: progress}); err != nil {
		return "", err
	}
	return st.ExportBundle(ctx, e.Name, out, progress)
}

// Debootstrap fills tree with the debootstrap entry e from mirror,
// reporting debootstrap's phases. It must run as root on a host that
// reaches the mirror. Whatever happens, nothing stays mounted in tree.
func Debootstrap(ctx context.Context, e catalog.Entry, mirror, tree string, progress Progress) error {
	if _, err := exec.LookPath("debootstrap"); err != nil {
		return fmt.Errorf("debootstrap is not installed (apt-get install debootstrap): %w", err)
	}
	args := []string{"--variant=" + e.Variant}
	if e.Variant == "" {
		args = args[:0]
	}
	if len(e.Packages) > 0 {
		args = append(args, "--include="+strings.Join(e.Packages, ","))
	}
	args = append(args, e.Suite, tree, mirror)
	cmd := exec.CommandContext(ctx, "debootstrap", args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C")
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	var tailMu sync.Mutex
	var tail []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		var last string
		for sc.Scan() {
			line := sc.Text()
			tailMu.Lock()
			tail = append(tail[max(0, len(tail)-19):], line)
			tailMu.Unlock()
			if msg, ok := strings.CutPrefix(line, "I: "); ok && phaseOf(msg) != last {
				last = phaseOf(msg)
				progress("debootstrap: "+last, 0, 0)
			}
		}
	}()
	progress("debootstrap: starting ("+e.Suite+" from "+mirror+")", 0, 0)
	err := cmd.Run()
	pw.Close()
	<-done
	unmountUnder(tree)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("debootstrap %s from %s: %w\n%s", e.Suite, mirror, err, strings.Join(tail, "\n"))
	}
	return trimTree(tree)
}

// phaseOf turns debootstrap's "Retrieving libc6 2.36" lines into a few
// stable phases: downloading, extracting, installing.
func phaseOf(msg string) string {
	switch {
	case strings.HasPrefix(msg, "Retrieving"), strings.HasPrefix(msg, "Validating"):
		return "downloading packages"
	case strings.HasPrefix(msg, "Extracting"):
		return "extracting packages"
	case strings.HasPrefix(msg, "Unpacking"), strings.HasPrefix(msg, "Configuring"), strings.HasPrefix(msg, "Installing"):
		return "installing packages"
	}
	return msg
}

// trimTree drops what a built image does not need or must not share
// between VMs: downloaded packages, apt lists (apt-get update fetches them
// again), SSH host keys (banger makes them per VM) and the machine id
// (systemd makes one on first boot).
func trimTree(tree string) error {
	if err := os.WriteFile(filepath.Join(tree, "etc/machine-id"), nil, 0o444); err != nil {
		return err
	}
	for _, g := range []string{"var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*_*", "var/log/*.log",
		"etc/ssh/ssh_host_*", "var/lib/dbus/machine-id"} {
		m, _ := filepath.Glob(filepath.Join(tree, g))
		for _, p := range m {
			if err := os.Remove(p); err != nil {
				return err
			}
		}
	}
	return nil
}

// unmountUnder lazily unmounts every mount below dir, deepest first
// (debootstrap mounts /proc and /sys in the target and may be killed
// before it unmounts them).
func unmountUnder(dir string) {
	mnts := mountsUnder(dir)
	sort.Sort(sort.Reverse(sort.StringSlice(mnts)))
	for _, m := range mnts {
		unix.Unmount(m, unix.MNT_DETACH)
	}
}

func mountedUnder(dir string) bool { return len(mountsUnder(dir)) > 0 }

func mountsUnder(dir string) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var mnts []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			mnts = append(mnts, f[4])
		}
	}
	return mnts
}
