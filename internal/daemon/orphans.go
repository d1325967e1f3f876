package daemon

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// reapOrphans kills processes whose command line names a path inside dir:
// a VMM started by a daemon that died before it could record the VMM.
// VM directories are unique per VM, so nothing else can match.
func reapOrphans(dir string) []int {
	if dir == "" {
		return nil
	}
	needle := []byte(filepath.Clean(dir) + "/")
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	var killed []int
	for _, p := range procs {
		pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil || !bytes.Contains(b, needle) {
			continue
		}
		if syscall.Kill(pid, syscall.SIGKILL) == nil {
			killed = append(killed, pid)
		}
	}
	return killed
}
