// Package doctor checks the host prerequisites of banger and says how to fix
// each missing one.
//
// Run performs every check and returns a Report: per check ok, warn or
// fail, one line of why and the exact fix, plus the VMM that `vmm = auto`
// picks and why. A Report is OK unless a check required for the configured
// path failed; `banger doctor` exits non-zero only then.
package doctor

import (
	"cmp"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"os/user"
	"sync"

	"banger/internal/api"
	"banger/internal/config"
	"banger/internal/vmm"
	"banger/internal/vmm/kvmcheck"
)

// Status is the outcome of one check.
type Status string

const (
	StatusOK   Status = "ok"
	StatusWarn Status = "warn"
	StatusFail Status = "fail"
)

// Check is the result of one host check.
type Check struct {
	Name   string `json:"name"`
	Status Status `json:"status"`
	Detail string `json:"detail"`        // one line: what was found, or why it matters
	Fix    string `json:"fix,omitempty"` // exact command or step; empty when ok
	// Required is set when the configured path cannot work without this
	// check passing. Only a failed required check makes a Report not OK.
	Required bool `json:"required"`
}

// Report is the result of Run.
type Report struct {
	Checks []Check `json:"checks"`
	// VMMSetting is the configured vmm: auto, firecracker or qemu.
	VMMSetting string `json:"vmm_setting"`
	// VMM is the driver the setting resolves to on this host, with the
	// acceleration it uses and why it was picked.
	VMM       string    `json:"vmm"`
	Accel     vmm.Accel `json:"accel"`
	VMMReason string    `json:"vmm_reason"`
}

// OK reports whether no required check failed.
func (r Report) OK() bool {
	for _, c := range r.Checks {
		if c.Required && c.Status == StatusFail {
			return false
		}
	}
	return true
}

// MarshalJSON adds the "ok" verdict to the report's fields.
func (r Report) MarshalJSON() ([]byte, error) {
	type plain Report
	return json.Marshal(struct {
		OK bool `json:"ok"`
		plain
	}{r.OK(), plain(r)})
}

// Options configure Run. The zero value of every field but Config and
// StateDir means "the real host"; tests override them.
type Options struct {
	Config   config.Config
	StateDir string // the daemon's state directory; need not exist yet
	// DaemonCheck reports whether bangerd answers; nil skips the check.
	DaemonCheck func(ctx context.Context) error
	// Web reports the running daemon's web UI; nil skips the check.
	Web func(ctx context.Context) (api.WebStatus, error)

	LookPath      func(file string) (string, error) // default exec.LookPath
	DevKVM        string                            // default /dev/kvm
	DevTun        string                            // default /dev/net/tun
	IPForwardPath string                            // default /proc/sys/net/ipv4/ip_forward
	// IsRoot reports whether the checks run as root; default euid == 0.
	IsRoot func() bool
	// VMMUser reports whether config.VMMUser exists. Default: os/user.
	VMMUser func() error
	// FreeBytes returns the bytes an unprivileged user may still write on
	// the filesystem holding path; default statfs.
	FreeBytes func(path string) (uint64, error)
	// NFTables probes the kernel's nf_tables over netlink; default lists
	// tables with github.com/google/nftables. Called only as root.
	NFTables func(ctx context.Context) error
}

func (o Options) withDefaults() Options {
	if o.LookPath == nil {
		o.LookPath = exec.LookPath
	}
	if o.DevKVM == "" {
		o.DevKVM = "/dev/kvm"
	}
	if o.DevTun == "" {
		o.DevTun = "/dev/net/tun"
	}
	if o.IPForwardPath == "" {
		o.IPForwardPath = "/proc/sys/net/ipv4/ip_forward"
	}
	if o.IsRoot == nil {
		o.IsRoot = func() bool { return os.Geteuid() == 0 }
	}
	if o.VMMUser == nil {
		o.VMMUser = func() error { _, err := user.Lookup(config.VMMUser); return err }
	}
	if o.FreeBytes == nil {
		o.FreeBytes = statfsFree
	}
	if o.NFTables == nil {
		o.NFTables = probeNFTables
	}
	if o.Config.VMM == "" {
		o.Config.VMM = config.VMMAuto
	}
	return o
}

// Run checks the host. Checks run concurrently; each bounds its own
// commands with a short timeout, and all stop when ctx is done.
func Run(ctx context.Context, o Options) Report {
	o = o.withDefaults()
	kvmErr := kvmcheck.Check(ctx, o.DevKVM, cmp.Or(o.Config.QEMUBin, "qemu-system-x86_64"))
	fcPath, fcErr := o.find(o.Config.FirecrackerBin)
	choice := Choose(o.Config.VMM, kvmErr, fcPath)

	checks := []func(context.Context) Check{
		func(context.Context) Check { return checkKVM(o, kvmErr) },
		func(ctx context.Context) Check { return checkFirecracker(ctx, o, fcPath, fcErr) },
	}
	if o.Config.JailerBin != "" {
		checks = append(checks, func(context.Context) Check { return checkJailer(o, choice) })
	}
	checks = append(checks,
		func(ctx context.Context) Check { return checkQEMU(ctx, o, choice) },
		func(ctx context.Context) Check { return checkMkfs(ctx, o) },
		func(ctx context.Context) Check { return checkDebootstrap(ctx, o) },
		func(context.Context) Check { return checkDepmod(o) },
		func(context.Context) Check { return checkVMMUser(o) },
		func(context.Context) Check { return checkIPForward(o) },
		func(context.Context) Check { return checkTun(o) },
		func(ctx context.Context) Check { return checkNFTables(ctx, o) },
		func(context.Context) Check { return checkSudo(o) },
		func(context.Context) Check { return checkDisk(o) },
	)
	if o.DaemonCheck != nil {
		checks = append(checks, func(ctx context.Context) Check { return checkDaemon(ctx, o) })
	}
	if o.Web != nil {
		checks = append(checks, func(ctx context.Context) Check { return checkWeb(ctx, o) })
	}

	r := Report{
		Checks:     make([]Check, len(checks)),
		VMMSetting: o.Config.VMM,
		VMM:        choice.VMM,
		Accel:      choice.Accel,
		VMMReason:  choice.Reason,
	}
	var wg sync.WaitGroup
	for i, check := range checks {
		wg.Go(func() { r.Checks[i] = check(ctx) })
	}
	wg.Wait()
	return r
}
