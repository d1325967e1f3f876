// Command vminit is the /init of the initrd TestQEMUVirtioSerial boots:
// it loads the virtio modules from /mods and runs the agent as PID 1.
package main

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"banger/internal/agent"
)

func main() {
	_ = unix.Mount("proc", "/proc", "proc", 0, "")
	// No modules.dep here: two passes settle the load order.
	mods := []string{"virtio_ring", "virtio", "virtio_mmio", "virtio_console",
		"vsock", "vmw_vsock_virtio_transport_common", "vmw_vsock_virtio_transport",
		"failover", "net_failover", "virtio_net"}
	for pass := range 2 {
		for _, m := range mods {
			f, err := os.Open("/mods/" + m + ".ko")
			if err != nil {
				continue
			}
			if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil && err != unix.EEXIST && pass == 1 {
				fmt.Println("vminit: loading", m+":", err)
			}
			f.Close()
		}
	}
	fmt.Println("vminit:", agent.RunAsInit())
}
