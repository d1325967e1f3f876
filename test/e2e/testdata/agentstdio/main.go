// Command agentstdio serves banger's agent protocol (the real agent.Server)
// on its stdin and stdout, authenticating hosts with the key in the file
// named by its argument. The e2e test of reidentify runs it in a VM through
// `banger vm exec`: the daemon holds the VM's own agent port, so the test
// reaches a second server of the same code this way.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"

	"banger/internal/agent"
)

type stdio struct {
	io.Reader
	io.Writer
}

func (stdio) Close() error { return os.Stdout.Close() }

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: agentstdio KEYFILE")
		os.Exit(2)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	s := agent.NewServer(logger, nil)
	s.SetKeyFile(os.Args[1])
	if err := s.ServeConn(context.Background(), stdio{os.Stdin, os.Stdout}, "stdio"); err != nil {
		fmt.Fprintln(os.Stderr, "agentstdio:", err)
		os.Exit(1)
	}
}
