package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
)

func newVMCpCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "cp SRC DST",
		Short: "Copy a file into or out of a running VM (VM:/path names the guest side)",
		Long: `Copy one regular file between the host and a running VM through the guest
agent. Exactly one of SRC and DST is VM:/absolute/path. "-" is stdin or
stdout on the host side. The guest file is written atomically; its mode
is the host file's.`,
		Example: "  banger vm cp ./data.bin dev:/root/data.bin\n  banger vm cp dev:/etc/os-release -",
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			srcVM, srcPath, srcRemote := splitRemote(args[0])
			dstVM, dstPath, dstRemote := splitRemote(args[1])
			if srcRemote == dstRemote {
				return fmt.Errorf("exactly one of SRC and DST must be VM:/path")
			}
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			switch {
			case dstRemote && srcPath == "-":
				return c.PutFile(cmd.Context(), dstVM, dstPath, 0o644, os.Stdin)
			case dstRemote:
				return c.CopyToVM(cmd.Context(), dstVM, dstPath, srcPath)
			case dstPath == "-":
				rc, err := c.GetFile(cmd.Context(), srcVM, srcPath)
				if err != nil {
					return err
				}
				defer rc.Close()
				_, err = io.Copy(os.Stdout, rc)
				return err
			}
			return c.CopyFromVM(cmd.Context(), srcVM, srcPath, dstPath)
		},
	}
}

// splitRemote splits "vm:/path"; a host path has no "name:" prefix.
func splitRemote(s string) (vm, path string, remote bool) {
	name, p, ok := strings.Cut(s, ":")
	if !ok || name == "" || strings.Contains(name, "/") || !strings.HasPrefix(p, "/") {
		return "", s, false
	}
	return name, p, true
}
