package kernel

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// ModulesLabel is the ext4 label of a bundle's module image.
const ModulesLabel = "banger-modules"

// depmod writes modules.dep, modules.alias and their binary indexes for
// root/lib/modules/<release>, so modprobe works in the guest (Debian
// packages leave that to their postinst).
func depmod(ctx context.Context, root, release string) error {
	bin, err := exec.LookPath("depmod")
	if err != nil {
		for _, p := range []string{"/usr/sbin/depmod", "/sbin/depmod"} {
			if _, serr := exec.LookPath(p); serr == nil {
				bin, err = p, nil
				break
			}
		}
	}
	if err != nil {
		return fmt.Errorf("depmod not found (install kmod): %w", err)
	}
	return run(ctx, bin, "-b", root, release)
}

// buildModulesImage makes a read-only-use ext4 image of dir (the content
// of lib/modules/<release>), sized to the content plus headroom.
func buildModulesImage(ctx context.Context, dir, dst string) error {
	var size, files int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		files++
		if info, err := d.Info(); err == nil && d.Type().IsRegular() {
			size += (info.Size() + 4095) &^ 4095
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sizing module tree: %w", err)
	}
	// Headroom for metadata: inode tables, directories, bitmaps.
	kib := (size+size/8+files*512)/1024 + 16*1024
	return run(ctx, "mkfs.ext4", "-q", "-F", "-L", ModulesLabel, "-O", "^has_journal",
		"-E", "root_owner=0:0", "-N", strconv.FormatInt(files+1024, 10),
		"-d", dir, dst, strconv.FormatInt(kib, 10)+"k")
}

func run(ctx context.Context, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%s: %w: %s", name, err, strings.TrimSpace(out.String()))
	}
	return nil
}
