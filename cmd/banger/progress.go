package main

import (
	"fmt"
	"os"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"banger/internal/api"
)

// progress renders a daemon's progress events on stderr: a redrawn bar on a
// terminal, one line per phase otherwise. Results go to stdout elsewhere.
// It is the CLI's client.Display.
type progress struct {
	mu    sync.Mutex
	tty   bool
	phase string
	drawn bool
}

func newProgress() *progress {
	_, err := unix.IoctlGetTermios(int(os.Stderr.Fd()), unix.TCGETS)
	return &progress{tty: err == nil}
}

// Event shows ev.
func (p *progress) Event(ev api.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch ev.Type {
	case api.EventLog:
		p.clear()
		fmt.Fprintln(os.Stderr, ev.Message)
	case api.EventProgress:
		if !p.tty {
			if ev.Phase != p.phase {
				fmt.Fprintln(os.Stderr, "==>", ev.Phase)
				p.phase = ev.Phase
			}
			return
		}
		p.phase = ev.Phase
		fmt.Fprintf(os.Stderr, "\r\033[K%s", line(ev))
		p.drawn = true
	}
}

func line(ev api.Event) string {
	if ev.Total <= 0 {
		if ev.Done > 0 {
			return fmt.Sprintf("%s %s", ev.Phase, size(ev.Done))
		}
		return ev.Phase
	}
	const width = 30
	frac := float64(ev.Done) / float64(ev.Total)
	frac = min(max(frac, 0), 1)
	n := int(frac * width)
	return fmt.Sprintf("%-28s [%s%s] %3.0f%% %s/%s", ev.Phase, strings.Repeat("=", n), strings.Repeat(" ", width-n),
		frac*100, size(ev.Done), size(ev.Total))
}

func size(b int64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.1fGiB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1fMiB", float64(b)/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.1fKiB", float64(b)/(1<<10))
	}
	return fmt.Sprintf("%dB", b)
}

func (p *progress) clear() {
	if p.drawn {
		fmt.Fprint(os.Stderr, "\r\033[K")
		p.drawn = false
	}
}

// Done ends the display of one step.
func (p *progress) Done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clear()
	p.phase = ""
}
