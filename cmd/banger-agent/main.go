// Command banger-agent is banger's guest agent. Inside the initrd it is
// /init; in a rootfs without an init system it is PID 1; otherwise it runs
// as a service.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"banger/internal/agent"
	"banger/internal/guestinit"
)

func main() {
	var err error
	switch {
	case os.Getpid() == 1 && guestinit.InInitrd():
		err = guestinit.Run()
	case os.Getpid() == 1:
		err = agent.RunAsInit()
	default:
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		err = agent.Run(ctx)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "banger-agent:", err)
		os.Exit(1)
	}
}
