package firecracker

import (
	"errors"
	"fmt"
	"os/exec"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/vmm"
)

// process is a Firecracker process watched through a pidfd, so that exit
// is seen the same way for a child and for a process adopted from an
// earlier daemon.
type process struct {
	pid  int
	done chan struct{} // closed when the process has exited

	mu    sync.Mutex // guards pidfd: closed (set to -1) after exit
	pidfd int

	stopR, stopW int // pipe: closing stopW ends watch without an exit

	waited  chan struct{} // closed after cmd.Wait returns; nil when adopted
	waitErr error         // exit status of a child, valid after waited
}

// startProcess starts cmd in a session of its own, so it outlives the
// daemon, and watches it.
func startProcess(cmd *exec.Cmd) (*process, error) {
	cmd.SysProcAttr = &unix.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	fd, err := unix.PidfdOpen(cmd.Process.Pid, 0)
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("pidfd_open %d: %w", cmd.Process.Pid, err)
	}
	p := &process{pid: cmd.Process.Pid, done: make(chan struct{}), pidfd: fd, waited: make(chan struct{})}
	if err := p.openStopPipe(); err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		unix.Close(fd)
		return nil, err
	}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.waited)
	}()
	go p.watch()
	return p, nil
}

// adoptProcess watches a process that is not our child. cmdlineArg must
// appear in its command line, so a reused PID is not mistaken for it.
func adoptProcess(pid int, cmdlineArg string) (*process, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("pid %d: %w", pid, vmm.ErrNotRunning)
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("pid %d: %w: %w", pid, vmm.ErrNotRunning, err)
	}
	// Check the command line after the pidfd is held: from here on the
	// pidfd refers to this process even if the PID is reused later.
	if err := vmm.CheckCmdline(pid, "", cmdlineArg); err != nil {
		unix.Close(fd)
		return nil, err
	}
	p := &process{pid: pid, done: make(chan struct{}), pidfd: fd}
	if err := p.openStopPipe(); err != nil {
		unix.Close(fd)
		return nil, err
	}
	go p.watch()
	return p, nil
}

func (p *process) openStopPipe() error {
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
		return fmt.Errorf("creating pipe: %w", err)
	}
	p.stopR, p.stopW = fds[0], fds[1]
	return nil
}

// watch closes done once the pidfd becomes readable, which happens when
// the process exits. It returns early, leaving done open, after
// stopWatching.
func (p *process) watch() {
	fds := []unix.PollFd{
		{Fd: int32(p.pidfd), Events: unix.POLLIN},
		{Fd: int32(p.stopR), Events: unix.POLLIN},
	}
	for {
		_, err := unix.Poll(fds, -1)
		if err == nil || !errors.Is(err, unix.EINTR) {
			break
		}
	}
	exited := fds[0].Revents != 0
	p.mu.Lock()
	unix.Close(p.pidfd)
	p.pidfd = -1
	unix.Close(p.stopR)
	if p.stopW >= 0 {
		unix.Close(p.stopW)
		p.stopW = -1
	}
	p.mu.Unlock()
	if exited {
		close(p.done)
	}
}

// stopWatching releases the pidfd of a process we give up on (an adopted
// process whose API does not answer) without signalling it.
func (p *process) stopWatching() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopW >= 0 {
		unix.Close(p.stopW)
		p.stopW = -1
	}
}

// signal sends sig. It returns nil when the process is already gone.
func (p *process) signal(sig unix.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pidfd < 0 {
		return nil
	}
	err := unix.PidfdSendSignal(p.pidfd, sig, nil, 0)
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("signalling firecracker pid %d: %w", p.pid, err)
	}
	return nil
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL and waits up to timeout for the exit.
func (p *process) kill(timeout time.Duration) error {
	if err := p.signal(unix.SIGKILL); err != nil {
		return err
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("firecracker pid %d did not exit %s after SIGKILL", p.pid, timeout)
	}
}

// exitStatus describes how a child exited, once it has ("exit status 1").
// It is empty for adopted processes.
func (p *process) exitStatus() string {
	if p.waited == nil {
		return ""
	}
	select {
	case <-p.waited:
	case <-time.After(time.Second):
		return ""
	}
	if p.waitErr == nil {
		return "exit status 0"
	}
	return p.waitErr.Error()
}
