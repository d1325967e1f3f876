package workspace

import (
	"path"
	"strings"
)

// GuestDir is where a workspace named name lands in the guest.
func GuestDir(name string) string { return path.Join("/root", name) }

// CheckoutArgv is the guest command that checks out from (a branch, tag
// or commit; empty means HEAD) in dir and, when branch is set, creates
// branch there and switches to it. It exits 127 when git is missing.
func CheckoutArgv(dir, from, branch string) []string {
	const script = `set -e
cd "$1"
command -v git >/dev/null 2>&1 || { echo "git is not installed in this guest" >&2; exit 127; }
if [ -n "$3" ]; then
	git checkout --quiet -b "$3" ${2:+"$2"}
else
	git checkout --quiet "$2"
fi`
	return []string{"sh", "-c", script, "sh", dir, from, branch}
}

// ToolingLog is the guest log of the tooling bootstrap of workspace name.
func ToolingLog(name string) string {
	return "/root/.cache/banger/vm-run-tooling-" + name + ".log"
}

// WantsTooling reports whether the set declares tools for mise.
func (s Set) WantsTooling() bool {
	for _, f := range s.Files {
		if f == ".mise.toml" || f == "mise.toml" || f == ".tool-versions" {
			return true
		}
	}
	return false
}

// ToolingArgv is the guest command that starts the best-effort mise
// bootstrap of the workspace in dir in the background, logging to
// ToolingLog(name), and returns at once. mise is installed from mise.run
// when the guest lacks it. Nothing it does can fail the caller.
func ToolingArgv(dir, name string) []string {
	const job = `cd "$1" || exit 0
echo "banger: tooling bootstrap of $1 started $(date -u)"
export PATH="/root/.local/bin:$PATH"
if ! command -v mise >/dev/null 2>&1; then
	if command -v curl >/dev/null 2>&1; then curl -fsSL https://mise.run | sh
	elif command -v wget >/dev/null 2>&1; then wget -qO- https://mise.run | sh
	else echo "banger: neither curl nor wget is installed; cannot install mise"; exit 0
	fi
fi
mise trust --yes . && mise install --yes
echo "banger: tooling bootstrap ended with status $? $(date -u)"`
	log := ToolingLog(name)
	start := `mkdir -p "$(dirname "$2")" && (setsid sh -c "$3" sh "$1" </dev/null >"$2" 2>&1 &) ; exit 0`
	return []string{"sh", "-c", start, "sh", dir, log, strings.TrimSpace(job)}
}
