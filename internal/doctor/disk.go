package doctor

import (
	"fmt"
	"os"
)

// Free space thresholds in the state directory: an image plus a VM's
// writable copy take a few GiB.
const (
	gib          = 1 << 30
	diskWarnFree = 10 * gib
	diskFailFree = 2 * gib
)

func checkDisk(o Options) Check {
	c := Check{Name: "disk space", Required: true}
	if o.StateDir == "" {
		c.Status, c.Detail = StatusWarn, "no state directory given; not checked"
		return c
	}
	dir := nearestDir(o.StateDir, func(p string) bool {
		_, err := os.Stat(p)
		return err == nil
	})
	free, err := o.FreeBytes(dir)
	if err != nil {
		c.Status, c.Detail = StatusWarn, fmt.Sprintf("cannot measure free space for %s: %v", o.StateDir, err)
		c.Fix = "check that " + dir + " is readable"
		return c
	}
	c.Detail = fmt.Sprintf("%.1f GiB free in %s", float64(free)/gib, dir)
	if dir != o.StateDir {
		c.Detail += fmt.Sprintf(" (state dir %s does not exist yet)", o.StateDir)
	}
	fix := fmt.Sprintf("free space on the file system holding %s, or set BANGER_HOME to a directory on a larger disk", dir)
	switch {
	case free < diskFailFree:
		c.Status, c.Fix = StatusFail, fix
		c.Detail += "; banger needs at least 2 GiB"
	case free < diskWarnFree:
		c.Status, c.Fix = StatusWarn, fix
		c.Detail += "; 10 GiB or more is recommended for images and VMs"
	default:
		c.Status = StatusOK
	}
	return c
}
