package disk

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// A helper dies with the process that started it (the daemon).
func TestHelperDiesWithParent(t *testing.T) {
	if os.Getenv("BANGER_HELPER_PARENT") == "1" {
		cmd := helper(context.Background(), "sleep", "60")
		if err := cmd.Start(); err != nil {
			os.Exit(2)
		}
		fmt.Println(cmd.Process.Pid)
		time.Sleep(time.Minute)
		return
	}
	parent := exec.Command(os.Args[0], "-test.run=^TestHelperDiesWithParent$")
	parent.Env = append(os.Environ(), "BANGER_HELPER_PARENT=1")
	out, err := parent.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := parent.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		parent.Process.Kill()
		t.Fatalf("reading the helper's pid: %v", err)
	}
	pid, _ := strconv.Atoi(line[:len(line)-1])
	parent.Process.Kill()
	parent.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("helper %d outlived its parent", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
