package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"banger/internal/catalog"
	"banger/internal/daemon"
	"banger/internal/image"
	"banger/internal/kernel"
)

// buildCatalog is the hidden `bangerd build-catalog NAME -o FILE.tar.zst
// [--mirror URL] [--agent BIN]`: it builds a catalog image into a bundle
// without a daemon, on a host that reaches the mirror (CI builds the
// default image this way once, then imports it where VMs boot). It needs
// root. Phases go to stderr, "SHA256  FILE" to stdout.
func buildCatalog(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bangerd build-catalog", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var out, mirror, agent string
	fs.StringVar(&out, "o", "", "bundle file to write")
	fs.StringVar(&out, "output", "", "bundle file to write")
	fs.StringVar(&mirror, "mirror", "", "Debian mirror (default: the host's apt mirror)")
	fs.StringVar(&agent, "agent", "", "banger-agent binary (default: beside bangerd)")
	names, err := parseInterspersed(fs, args)
	if err != nil {
		return 2
	}
	if len(names) != 1 {
		fmt.Fprintln(stderr, "usage: bangerd build-catalog NAME -o FILE.tar.zst [--mirror URL] [--agent BIN]")
		return 2
	}
	e, ok := catalog.Lookup(names[0])
	if !ok {
		fmt.Fprintf(stderr, "bangerd: unknown catalog image %q (valid: %s)\n", names[0], strings.Join(catalog.Names(), ", "))
		return 2
	}
	if out == "" {
		fmt.Fprintln(stderr, "bangerd: -o is required")
		return 2
	}
	if agent == "" {
		if agent, err = daemon.FindAgent(); err != nil {
			fmt.Fprintln(stderr, "bangerd:", err)
			return 1
		}
	}
	// A missing agent fails now, not after minutes of debootstrap.
	if _, err := os.Stat(agent); err != nil {
		fmt.Fprintln(stderr, "bangerd: --agent:", err)
		return 1
	}
	if mirror == "" {
		mirror = kernel.HostMirror("/", e.Suite)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var phase string
	sum, err := image.BuildCatalogBundle(ctx, e, mirror, agent, out, func(p string, _, _ int64) {
		if p != phase {
			fmt.Fprintln(stderr, "==>", p)
			phase = p
		}
	})
	if err != nil {
		fmt.Fprintln(stderr, "bangerd:", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s  %s\n", sum, out)
	return 0
}

// parseInterspersed parses args with fs, flags before and after the
// positional arguments, which it returns.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}
