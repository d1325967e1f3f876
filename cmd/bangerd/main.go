// Command bangerd is banger's daemon. Run without flags it starts itself
// in the background and returns once it answers on its socket; with
// --foreground it runs in this process and logs to stderr.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"banger/internal/client"
	"banger/internal/config"
	"banger/internal/daemon"
	"banger/internal/version"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "build-catalog" {
		os.Exit(buildCatalog(os.Args[2:], os.Stdout, os.Stderr))
	}
	foreground := flag.Bool("foreground", false, "run in this process and log to stderr (for debugging)")
	logFile := flag.String("log-file", "", "with --foreground, log to this file instead of stderr")
	debug := flag.Bool("debug", false, "log debug messages")
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *showVersion {
		fmt.Println(version.String())
		return
	}
	dirs := config.DefaultDirs()
	if !*foreground {
		os.Exit(background(dirs))
	}
	os.Exit(runForeground(dirs, *logFile, *debug))
}

func runForeground(dirs config.Dirs, logFile string, debug bool) int {
	out := os.Stderr
	if logFile != "" {
		f, err := os.OpenFile(logFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND|syscall.O_NOFOLLOW, 0o600)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bangerd:", err)
			return 1
		}
		out = f
	}
	level := slog.LevelInfo
	if debug {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: level}))

	cfg, _, err := config.Load(dirs.ConfigFile())
	if err != nil {
		fmt.Fprintln(out, "bangerd:", err)
		return 1
	}
	agent, err := daemon.FindAgent()
	if err != nil {
		logger.Warn("guest agent not found; kernels and images cannot be built", "err", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err = daemon.Run(ctx, daemon.Options{Dirs: dirs, Config: cfg, Logger: logger, AgentBin: agent})
	if errors.Is(err, daemon.ErrAlreadyRunning) {
		fmt.Fprintln(out, "bangerd:", err)
		return client.ExitAlreadyRunning
	}
	if err != nil {
		fmt.Fprintln(out, "bangerd:", err)
		logger.Error("bangerd stopped", "err", err)
		return 1
	}
	return 0
}
