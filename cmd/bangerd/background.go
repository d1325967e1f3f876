package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"banger/internal/client"
	"banger/internal/config"
)

// background starts `bangerd --foreground` detached from this session,
// logging to the state directory, and waits until it answers or dies.
func background(dirs config.Dirs) int {
	ctx := context.Background()
	c := client.New(dirs.Socket())
	if v, err := c.Version(ctx); err == nil {
		fmt.Printf("bangerd is already running (pid %d, version %s)\n", v.PID, v.Version)
		return client.ExitAlreadyRunning
	}
	if err := config.MkdirTrusted(dirs.State, 0o711); err != nil {
		fmt.Fprintf(os.Stderr, "bangerd: state directory %s: %v (run as root, or set %s to a directory you own)\n", dirs.State, err, config.HomeEnv)
		return 1
	}
	logPath := filepath.Join(dirs.State, "bangerd.log")
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bangerd: state directory %s is not writable: %v (run as root, or set %s to a directory you own)\n", dirs.State, err, config.HomeEnv)
		return 1
	}
	defer logf.Close()
	// The user the daemon serves may read its log (the CLI points them to it).
	logf.Chown(config.InvokingUID(), config.InvokingGID())
	start, _ := logf.Seek(0, 2)

	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bangerd:", err)
		return 1
	}
	cmd := exec.Command(exe, "--foreground", "--log-file", logPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "bangerd:", err)
		return 1
	}
	exited := make(chan int, 1)
	go func() {
		cmd.Wait()
		exited <- cmd.ProcessState.ExitCode()
	}()
	ready := make(chan error, 1)
	go func() { ready <- client.WaitReady(ctx, c, 15*time.Second, 0) }()
	select {
	case err := <-ready:
		if err != nil {
			cmd.Process.Kill()
			fmt.Fprintf(os.Stderr, "bangerd: %v\n%s", err, logTail(logPath, start))
			return 1
		}
		return 0
	case code := <-exited:
		if code == client.ExitAlreadyRunning {
			// Lost a start race: the winner is coming up.
			if err := client.WaitReady(ctx, c, 15*time.Second, 0); err == nil {
				return client.ExitAlreadyRunning
			}
		}
		fmt.Fprintf(os.Stderr, "bangerd exited during start-up (status %d):\n%s", code, logTail(logPath, start))
		return 1
	}
}

func logTail(path string, from int64) string {
	b, err := os.ReadFile(path)
	if err != nil || int64(len(b)) < from {
		return ""
	}
	b = b[from:]
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(bytes.TrimLeft(b, "\n"))
}
