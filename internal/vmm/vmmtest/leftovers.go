package vmmtest

import (
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// pidAlive reports whether a process with pid runs (a zombie does not).
func pidAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	return !strings.HasPrefix(rest, "Z")
}

// leftovers lists the sockets below dir, the runFiles in it, and the
// processes whose command line names a path in dir.
func leftovers(dir string, runFiles []string) []string {
	var left []string
	filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err == nil && e.Type()&fs.ModeSocket != 0 {
			left = append(left, "socket "+p)
		}
		return nil
	})
	for _, name := range runFiles {
		if _, err := os.Lstat(filepath.Join(dir, name)); err == nil {
			left = append(left, "file "+name)
		}
	}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		// A zombie has an empty cmdline: what matches runs.
		b, err := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), dir+"/") {
			left = append(left, "process "+p.Name())
		}
	}
	return left
}
