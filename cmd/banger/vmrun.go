package main

import "github.com/spf13/cobra"

// newVMRunCmds returns vm run, ssh and workspace.
func newVMRunCmds() []*cobra.Command { return nil }
