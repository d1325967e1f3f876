package main

import "github.com/spf13/cobra"

// newImagePullCmds returns image pull, export and import.
func newImagePullCmds() []*cobra.Command { return nil }
