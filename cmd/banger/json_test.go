package main

import (
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// Every list and inspect command has a --json flag: README and STYLE.md
// promise it to scripts.
func TestListAndInspectHaveJSON(t *testing.T) {
	var walk func(c *cobra.Command)
	seen := 0
	walk = func(c *cobra.Command) {
		if n := c.Name(); n == "list" || n == "inspect" || strings.HasSuffix(n, "-list") {
			seen++
			f := c.Flags().Lookup("json")
			if f == nil {
				t.Errorf("%q has no --json flag", c.CommandPath())
			} else if f.Value.Type() != "bool" {
				t.Errorf("%q: --json is a %s, want a bool", c.CommandPath(), f.Value.Type())
			}
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(newRootCmd())
	// vm, image, kernel, session: list; vm, image, kernel, network: inspect.
	if seen < 7 {
		t.Fatalf("found %d list/inspect commands; the walk does not see the tree", seen)
	}
}
