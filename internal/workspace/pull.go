package workspace

import (
	"fmt"
	"strconv"
	"strings"
)

// The exit codes of the guest's pull scripts, besides 0 and git's own.
const (
	PullNoGit     = 127 // git is not installed in the guest
	PullNoDir     = 3   // the guest directory does not exist
	PullNotRepo   = 4   // it is not a git repository
	PullNoCommits = 5   // its HEAD has no commit yet
)

// PullRef is the guest ref that holds what a pull takes while it is
// bundled; nonce keeps two pulls apart.
func PullRef(nonce string) string { return "refs/banger/pull-" + nonce }

// GuestCommit says how the guest makes the extra commit of its
// uncommitted changes: with its own git identity when it has one, else
// with Name and Email.
type GuestCommit struct {
	Message, Name, Email string
}

// pullCheck is the start of both pull scripts: $1 is the guest
// directory. It reads the host's commits from stdin (see
// PullInspectArgv); not lists those the guest has (the rest it cannot
// have reached) as rev-list's ^id arguments.
const pullCheck = `command -v git >/dev/null 2>&1 || { echo "git is not installed in this guest" >&2; exit 127; }
cd "$1" 2>/dev/null || { echo "$1 does not exist in this guest" >&2; exit 3; }
git rev-parse --git-dir >/dev/null 2>&1 || { echo "$1 is not a git repository in this guest" >&2; exit 4; }
known=$(git cat-file --batch-check='%(objecttype) %(objectname) %(rest)') || exit
# not RE: as ^id lines, the host's commits the guest has whose line's rest matches RE.
not() { printf '%s\n' "$known" | sed -n "s/^commit \([0-9a-f]*\)$1\$/^\1/p"; }
`

// PullInspectArgv is the guest command that looks at the repository in
// dir: its HEAD, branch and uncommitted changes, how many commits it has
// beyond the base, and how many of them the host lacks. Stdin holds the
// host's commits, one a line: the tips of its refs, and those that make
// up the base (the commit the workspace was copied at, the host's HEAD)
// followed by " base". With uncommitted set and a dirty work tree, it
// first commits the changes on top of HEAD through a temporary index, so
// the guest's work tree, index and branches stay as they are. When the
// host lacks commits, ref is set to what the pull takes, for
// PullBundleArgv to send and delete. The output is what ParseGuestRepo
// reads.
func PullInspectArgv(dir, ref string, uncommitted bool, c GuestCommit) []string {
	const script = pullCheck + `head=$(git rev-parse -q --verify 'HEAD^{commit}') || { echo "$1 has no commits in this guest" >&2; exit 5; }
branch=$(git symbolic-ref -q --short HEAD) || branch=
status=$(git --no-optional-locks status --porcelain) || exit
tip=$head
if [ "$3" = 1 ] && [ -n "$status" ]; then
	tmp=$(mktemp -d) || exit
	trap 'rm -rf "$tmp"' EXIT
	idx=$(git rev-parse --git-path index) || exit
	if [ -f "$idx" ]; then cp "$idx" "$tmp/index" || exit; fi
	GIT_INDEX_FILE="$tmp/index" git add -A || exit
	tree=$(GIT_INDEX_FILE="$tmp/index" git write-tree) || exit
	if [ "$tree" != "$(git rev-parse "$head^{tree}")" ]; then
		git config user.name >/dev/null || export GIT_AUTHOR_NAME="$5" GIT_COMMITTER_NAME="$5"
		git config user.email >/dev/null || export GIT_AUTHOR_EMAIL="$6" GIT_COMMITTER_EMAIL="$6"
		tip=$(git commit-tree "$tree" -p "$head" -m "$4") || exit
	fi
fi
new=$({ not ' base'; echo "$tip"; } | git rev-list --count --stdin) || exit
missing=$({ not '.*'; echo "$tip"; } | git rev-list --count --stdin) || exit
if [ "$missing" -gt 0 ]; then git update-ref "$2" "$tip" || exit; fi
printf 'head %s\nbranch %s\ntip %s\nnew %s\nmissing %s\n' "$head" "$branch" "$tip" "$new" "$missing"
[ -z "$status" ] || printf '%s\n' "$status"
`
	u := "0"
	if uncommitted {
		u = "1"
	}
	return []string{"sh", "-c", script, "sh", dir, ref, u, c.Message, c.Name, c.Email}
}

// PullBundleArgv is the guest command that writes a git bundle of ref in
// the repository in dir to stdout, less the commits the host has (read
// from stdin as for PullInspectArgv), then deletes ref.
func PullBundleArgv(dir, ref string) []string {
	const script = pullCheck + `{ not '.*'; echo "$2"; } | git bundle create --quiet - --stdin
rc=$?
git update-ref -d "$2"
exit $rc
`
	return []string{"sh", "-c", script, "sh", dir, ref}
}

// GuestRepo is what PullInspectArgv found in the guest.
type GuestRepo struct {
	Head   string // the commit of HEAD
	Branch string // the branch checked out, "" when detached
	// Tip is what the pull takes: Head, or the extra commit of the
	// uncommitted changes on top of it.
	Tip string
	// New is how many commits Tip has beyond the base; Missing how many
	// of them the host lacks (0: the host has them all, under other
	// refs).
	New, Missing int
	// Status is git status --porcelain: the uncommitted changes.
	Status []string
}

// Uncommitted reports whether Tip is the extra commit of uncommitted
// changes.
func (g GuestRepo) Uncommitted() bool { return g.Tip != g.Head }

// ParseGuestRepo reads PullInspectArgv's output.
func ParseGuestRepo(out string) (GuestRepo, error) {
	bad := fmt.Errorf("unexpected answer from the guest's git: %q", out)
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	keys := []string{"head", "branch", "tip", "new", "missing"}
	if len(lines) < len(keys) {
		return GuestRepo{}, bad
	}
	vals := make([]string, len(keys))
	for i, key := range keys {
		v, ok := strings.CutPrefix(lines[i], key+" ")
		if !ok {
			return GuestRepo{}, bad
		}
		vals[i] = v
	}
	g := GuestRepo{Head: vals[0], Branch: vals[1], Tip: vals[2]}
	var err1, err2 error
	g.New, err1 = strconv.Atoi(vals[3])
	g.Missing, err2 = strconv.Atoi(vals[4])
	if err1 != nil || err2 != nil || g.Head == "" || g.Tip == "" {
		return GuestRepo{}, bad
	}
	for _, l := range lines[len(keys):] {
		if l != "" {
			g.Status = append(g.Status, l)
		}
	}
	return g, nil
}
