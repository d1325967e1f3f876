// Package diskspace tells a full file system from other write errors and
// describes a file system's free space in the words errors use.
package diskspace

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// IsFull reports whether err is a full file system: ENOSPC (or EDQUOT,
// a full quota), or a tool's words for it (QEMU's migration errors are
// text).
func IsFull(err error) bool {
	if err == nil {
		return false
	}
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) ||
		strings.Contains(strings.ToLower(err.Error()), "no space left on device")
}

// Free is what the file system of dir has free for an unprivileged
// writer, in bytes; ok is false when it cannot be read. A dir that is
// gone (removed as a failure was undone) is asked through its nearest
// parent that is there.
func Free(dir string) (free int64, ok bool) {
	var st syscall.Statfs_t
	for {
		err := syscall.Statfs(dir, &st)
		if err == nil {
			return int64(st.Bavail) * st.Bsize, true
		}
		up := filepath.Dir(dir)
		if !errors.Is(err, syscall.ENOENT) || up == dir {
			return 0, false
		}
		dir = up
	}
}

// Describe names the file system that holds dir and its free space, for
// an error: "the file system at /var (ext4, 3 MiB free)".
func Describe(dir string) string {
	free := "unknown space free"
	if b, ok := Free(dir); ok {
		free = fmt.Sprintf("%d MiB free", b>>20)
	}
	if at, fstype := mountOf(dir); at != "" {
		return fmt.Sprintf("the file system at %s (%s, %s)", at, fstype, free)
	}
	return fmt.Sprintf("the file system of %s (%s)", dir, free)
}

// mountOf is the mount point that holds path and its type, from
// /proc/self/mountinfo: the longest mount point that is path or one of
// its parents ("" when it cannot be read).
func mountOf(path string) (at, fstype string) {
	if p, err := filepath.EvalSymlinks(path); err == nil {
		path = p
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent major:minor root mountpoint options [optional...] - fstype source super
		fields := strings.Fields(sc.Text())
		if len(fields) < 7 {
			continue
		}
		mp := unescape(fields[4])
		if !within(path, mp) || len(mp) < len(at) {
			continue
		}
		for i, f := range fields {
			if f == "-" && i+1 < len(fields) {
				at, fstype = mp, fields[i+1]
				break
			}
		}
	}
	return at, fstype
}

// within reports whether path is dir or below it.
func within(path, dir string) bool {
	if dir == "/" {
		return strings.HasPrefix(path, "/")
	}
	return path == dir || strings.HasPrefix(path, dir+"/")
}

// unescape undoes mountinfo's octal escapes of space, tab, newline and
// backslash.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	r := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)
	return r.Replace(s)
}

// Dir is the directory err names (the parent of a *fs.PathError's or
// *os.LinkError's path), or fallback when it names none.
func Dir(err error, fallback string) string {
	var pe *fs.PathError
	if errors.As(err, &pe) && filepath.IsAbs(pe.Path) {
		return filepath.Dir(pe.Path)
	}
	var le *os.LinkError
	if errors.As(err, &le) && filepath.IsAbs(le.New) {
		return filepath.Dir(le.New)
	}
	return fallback
}
