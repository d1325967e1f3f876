// Command vminit is a throwaway smoke-test init: it loads the virtio
// modules and runs the agent as PID 1.
package main

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"banger/internal/agent"
)

func main() {
	_ = unix.Mount("proc", "/proc", "proc", 0, "")
	for _, m := range []string{"virtio", "virtio_ring", "virtio_mmio", "virtio_console"} {
		f, err := os.Open("/mods/" + m + ".ko")
		if err != nil {
			fmt.Println("open", m, err)
			continue
		}
		if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil {
			fmt.Println("insmod", m, err)
		}
		f.Close()
	}
	fmt.Println(agent.RunAsInit())
}
