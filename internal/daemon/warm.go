package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"banger/internal/api"
	"banger/internal/guest"
	"banger/internal/image"
	"banger/internal/kernel"
	"banger/internal/store"
	"banger/internal/vmm"
)

// Warm start: the first cold boot of an image (by vm create or vm run)
// snapshots the guest as soon as it is ready, before anything of the
// user's goes in (credentials, workspace, commands), and later creates of
// the same image, kernel, VMM and version and sizes restore that
// snapshot instead of booting (createFrom, which gives the guest its own
// identity). The snapshot is an ordinary one of kind warm.

func imageStamp(im image.Image) string {
	return im.Digest + "@" + strconv.FormatInt(im.CreatedAt.UnixNano(), 10)
}

// warmPlan is what create does about warm start: restore sn, or boot
// cold (saying why) and maybe leave a warm snapshot called make.
type warmPlan struct {
	sn       store.Snapshot
	restorer vmm.Restorer
	kb       kernel.Bundle
	found    bool
	why      string // cold: why not warm
	make     string // cold: the warm snapshot to take once ready, "" for none
}

// warmFor plans the start of req (resolved: sizes, image and kernel
// filled in) of image im.
func (m *vmManager) warmFor(ctx context.Context, req api.CreateVMRequest, im image.Image) warmPlan {
	if req.Cold {
		return warmPlan{why: "--cold"}
	}
	if !m.cfg.WarmStart {
		return warmPlan{why: "warm_start is off (config.toml, or BANGER_WARM_START=false)"}
	}
	d := m.drivers[m.def]
	if d == nil || !d.Features().Snapshots {
		return warmPlan{why: "vmm " + m.def + " has no memory snapshots"}
	}
	if !d.Features().Layers {
		// A restore would copy the snapshot's whole disk (vm create
		// --from-snapshot does, where asked for).
		return warmPlan{why: "vmm " + m.def + " takes raw disks only: a warm start would copy the whole disk"}
	}
	version := ""
	if vr, ok := d.(vmm.Versioner); ok {
		version, _ = vr.Version(ctx)
	}
	key := fmt.Sprintf("%s %s, %d vcpus, %d MiB, disk %d MiB", m.def, version, req.VCPUs, req.MemoryMiB, req.DiskBytes>>20)
	plan := warmPlan{
		why:  fmt.Sprintf("no warm snapshot of image %s for %s", im.Name, key),
		make: warmName(im, req, m.def, version),
	}
	snaps, err := m.store.ListSnapshots(ctx)
	if err != nil {
		plan.why = "listing snapshots: " + err.Error()
		return plan
	}
	for _, sn := range snaps {
		if sn.Kind != api.SnapshotWarm || sn.Image != im.Name || sn.Kernel != req.Kernel || sn.VMM != m.def ||
			sn.VCPUs != req.VCPUs || sn.MemoryMiB != req.MemoryMiB || sn.DiskBytes != req.DiskBytes || sn.State != api.SnapshotReady {
			continue
		}
		var meta snapshotMeta
		json.Unmarshal([]byte(sn.Meta), &meta)
		if meta.ImageStamp != imageStamp(im) {
			plan.why = fmt.Sprintf("warm snapshot %s is of an earlier image %s (pulled or imported again since)", sn.Name, im.Name)
			continue
		}
		r, kb, err := m.restoreCheck(ctx, sn, req)
		if err != nil {
			plan.why = err.Error()
			continue
		}
		return warmPlan{sn: sn, restorer: r, kb: kb, found: true}
	}
	return plan
}

// warmName names the warm snapshot of im for these sizes, VMM and
// version: warm-<image>-<hash of all that decides a match>.
func warmName(im image.Image, req api.CreateVMRequest, vmmName, version string) string {
	h := sha256.Sum256([]byte(strings.Join([]string{imageStamp(im), req.Kernel, vmmName, version,
		strconv.Itoa(req.VCPUs), strconv.Itoa(req.MemoryMiB), strconv.FormatInt(req.DiskBytes, 10)}, "\x00")))
	base := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-' {
			return r
		}
		if r >= 'A' && r <= 'Z' {
			return r + 'a' - 'A'
		}
		return '-'
	}, im.Name)
	if len(base) > 40 {
		base = base[:40]
	}
	return "warm-" + base + "-" + hex.EncodeToString(h[:4])
}

// createWarm restores a new VM of req from plan's warm snapshot. When
// that fails the VM is gone again (createFrom undoes it) and the caller
// boots cold, saying why.
func (m *vmManager) createWarm(ctx context.Context, req api.CreateVMRequest, plan warmPlan, p progressFunc) (api.VM, error) {
	t := time.Now()
	out, err := m.createFrom(ctx, req, plan.sn, plan.restorer, plan.kb, api.BootInfo{Mode: api.BootWarm, Snapshot: plan.sn.Name}, p)
	if err == nil {
		m.log.Info("warm start", "vm", out.Name, "snapshot", plan.sn.Name, "took", time.Since(t))
	}
	return out, err
}

// takeWarm snapshots v, just ready after a cold boot, as warm snapshot
// name, and records it in boot. It is called before the credential sync
// and before any workspace or command, so the snapshot holds none of
// them; what identifies the guest (host key, agent key, machine-id,
// hostname, address) is replaced on every restore. A failure only
// costs the next create its warm start: it is logged and kept in boot.
func (m *vmManager) takeWarm(ctx context.Context, v *store.VM, im image.Image, name string, boot *api.BootInfo) {
	if im.HasSSHD {
		if err := m.waitSSHD(ctx, *v, 30*time.Second); err != nil {
			m.log.Warn("no warm snapshot: sshd did not come up", "vm", v.Name, "err", err)
			return
		}
	}
	t := time.Now()
	sn, err := m.snapshotLocked(ctx, v, name, api.SnapshotWarm)
	if err != nil {
		var ae *api.Error
		if errors.As(err, &ae) && ae.Code == api.Conflict {
			return // another create of the image made it meanwhile
		}
		m.log.Warn("no warm snapshot", "vm", v.Name, "err", err)
		return
	}
	boot.MadeWarm, boot.MadeWarmMS = sn.Name, time.Since(t).Milliseconds()
	m.log.Info("warm snapshot taken", "vm", v.Name, "snapshot", sn.Name, "took", time.Since(t))
}

// sshdListening is true (exit 0) when something listens on TCP port 22
// in the guest (state 0A is LISTEN in /proc/net/tcp).
const sshdListening = `grep -qE '^ *[0-9]+: [0-9A-F]+:0016 [0-9A-F]+:[0-9A-F]+ 0A' /proc/net/tcp /proc/net/tcp6 2>/dev/null`

// waitSSHD waits, through the agent, until the guest's sshd listens.
func (m *vmManager) waitSSHD(ctx context.Context, v store.VM, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		a, err := m.agent(ctx, v)
		if err == nil {
			code, err := a.Exec(ctx, guest.ExecRequest{Argv: []string{"sh", "-c", sshdListening}}, nil, nil, nil)
			if err == nil && code == 0 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("nothing listens on port 22 in the guest after %s", timeout)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// warmImage makes the warm snapshot of image name for the default sizes
// ahead of time: a temporary VM boots cold, is snapshotted and deleted.
// When a usable one exists it is returned as it is.
func (m *vmManager) warmImage(ctx context.Context, name string, p progressFunc) (api.Snapshot, error) {
	req := api.CreateVMRequest{Image: name, Name: "warm-" + newID()[:12]}
	im, _, err := m.resolve(ctx, &req)
	if err != nil {
		return api.Snapshot{}, err
	}
	plan := m.warmFor(ctx, req, im)
	if plan.found {
		return m.snapView(ctx, plan.sn), nil
	}
	if plan.make == "" {
		return api.Snapshot{}, api.Errorf(api.Unavailable, "image %s cannot have a warm snapshot: %s", name, plan.why).
			WithHint("warm start needs the qemu vmm and warm_start = true in config.toml")
	}
	p("booting a temporary vm "+req.Name, 0, 0)
	out, err := m.create(ctx, req, p)
	defer func() {
		if err := m.delete(context.WithoutCancel(ctx), req.Name, true); err != nil && !isNotFound(err) {
			m.log.Error("removing the temporary vm of image warm", "vm", req.Name, "err", err)
		}
	}()
	if err != nil {
		return api.Snapshot{}, fmt.Errorf("booting image %s: %w", name, err)
	}
	if out.Boot == nil || out.Boot.MadeWarm == "" {
		return api.Snapshot{}, api.Errorf(api.Internal, "image %s booted but no warm snapshot was taken", name).
			WithHint("the daemon log (bangerd.log in the state directory) says why")
	}
	sn, err := m.getSnapshot(ctx, out.Boot.MadeWarm)
	if err != nil {
		return api.Snapshot{}, err
	}
	return m.snapView(ctx, sn), nil
}

func isNotFound(err error) bool {
	var ae *api.Error
	return errors.As(err, &ae) && ae.Code == api.NotFound
}

// deleteWarmOf removes the warm snapshots of image name, which go with
// their image (the caller checked that no VM uses the image, so none
// builds on them).
func (m *vmManager) deleteWarmOf(ctx context.Context, name string) error {
	snaps, err := m.store.ListSnapshots(ctx)
	if err != nil {
		return err
	}
	for _, sn := range snaps {
		if sn.Kind == api.SnapshotWarm && sn.Image == name {
			if err := m.deleteSnapshot(ctx, sn.Name); err != nil {
				return fmt.Errorf("removing warm snapshot %s of image %s: %w", sn.Name, name, err)
			}
		}
	}
	return nil
}
