package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"strings"

	"banger/internal/config"
)

// vmmUser is the unprivileged account the VMMs run as: QEMU drops to it
// with -runas, the Firecracker jailer with --uid/--gid.
type vmmUser struct {
	name     string
	uid, gid int
}

// ensureVMMUser looks up config.VMMUser and, when it is missing and the
// daemon is root, creates it as a system user without a home or login
// shell (the same as make install does). It returns nil when the user
// cannot be had: VMMs then run as root, and the log and banger doctor
// say so.
func ensureVMMUser(ctx context.Context, log *slog.Logger) *vmmUser {
	u, err := user.Lookup(config.VMMUser)
	if err != nil && os.Geteuid() == 0 {
		out, cerr := exec.CommandContext(ctx, "useradd", "--system", "--user-group", "--no-create-home",
			"--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin",
			"--comment", "banger VMM processes", config.VMMUser).CombinedOutput()
		if cerr != nil {
			log.Warn("vmm user missing and could not be created; VMMs run as root (run: sudo make install)",
				"user", config.VMMUser, "err", fmt.Errorf("%w: %s", cerr, strings.TrimSpace(string(out))))
			return nil
		}
		log.Info("created vmm user", "user", config.VMMUser)
		u, err = user.Lookup(config.VMMUser)
	}
	if err != nil {
		log.Warn("vmm user missing; VMMs run as root (run: sudo make install)", "user", config.VMMUser, "err", err)
		return nil
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if uid == 0 {
		log.Warn("vmm user is uid 0; VMMs are not confined by it", "user", config.VMMUser)
		return nil
	}
	return &vmmUser{name: u.Username, uid: uid, gid: gid}
}
