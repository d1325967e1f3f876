package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// timed runs f and returns how long it took.
func timed(f func()) time.Duration {
	start := time.Now()
	f()
	return time.Since(start)
}

// report prints and records banger's time against the bare tool's.
func report(b *testing.B, what string, banger, bare time.Duration, unit string) {
	bs, qs := banger.Seconds()/float64(b.N), bare.Seconds()/float64(b.N)
	b.ReportMetric(bs, "banger-s/"+unit)
	b.ReportMetric(qs, "bare-s/"+unit)
	b.ReportMetric(bs/qs, "ratio")
	fmt.Printf("%s: banger %.3fs, bare %.3fs, ratio %.2f\n", what, bs, qs, bs/qs)
}

// vm create --no-start of a 2 GiB image against copying the same file
// with cp --reflink=auto and cp --sparse=always.
func BenchmarkVMCreate2GiB(b *testing.B) {
	e := bootEnv(b)
	big := filepath.Join(b.TempDir(), "big.ext4")
	run(b, "cp", "--sparse=always", filepath.Join(fixtures(b), "rootfs.ext4"), big)
	run(b, "truncate", "-s", "2G", big)
	run(b, "resize2fs", "-f", big, "2G")
	e.ok("image", "register", "--name", "big", "--rootfs", big, "--kernel-ref", "generic-6.1")
	var im struct{ Rootfs string }
	json.Unmarshal([]byte(e.ok("image", "inspect", "big", "--json")), &im)
	e.ok("vm", "create", "--no-start", "--image", "big", "--name", "warm") // daemon and caches warm
	e.ok("vm", "delete", "warm")
	dst := filepath.Join(filepath.Dir(im.Rootfs), "copy.ext4")
	var banger, bangerSynced, reflink, sparse, synced time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		name := fmt.Sprintf("c%d", i)
		d := timed(func() { e.ok("vm", "create", "--no-start", "--image", "big", "--name", name) })
		banger += d
		// vm create does not fsync the disk (internal/disk: like cp, it
		// leaves it to writeback); the durable figure adds a sync -f of it.
		var v struct{ Disk string }
		json.Unmarshal([]byte(e.ok("vm", "inspect", name)), &v)
		bangerSynced += d + timed(func() { run(b, "sync", "-f", v.Disk) })
		b.StopTimer()
		run(b, "sync") // no cp below pays for banger's dirty pages
		b.StartTimer()
		reflink += timed(func() { run(b, "cp", "--reflink=auto", im.Rootfs, dst) })
		os.Remove(dst)
		sparse += timed(func() { run(b, "cp", "--sparse=always", im.Rootfs, dst) })
		os.Remove(dst)
		b.StopTimer()
		run(b, "sync")
		b.StartTimer()
		synced += timed(func() { run(b, "sh", "-c", "cp --sparse=always \"$0\" \"$1\" && sync -f \"$1\"", im.Rootfs, dst) })
		b.StopTimer()
		os.Remove(dst)
		e.ok("vm", "delete", name)
		run(b, "sync")
		b.StartTimer()
	}
	b.StopTimer()
	report(b, "vm create (2 GiB) vs cp --reflink=auto", banger, reflink, "create")
	fmt.Printf("vm create (2 GiB) vs cp --sparse=always: ratio %.2f\n", banger.Seconds()/sparse.Seconds())
	// Neither vm create nor cp fsyncs: the durable comparison syncs both.
	fmt.Printf("vm create && sync -f (2 GiB) vs cp --sparse=always && sync -f: ratio %.2f\n", bangerSynced.Seconds()/synced.Seconds())
}

// Workspace copy of a 200 MB / 20k-file repository: vm workspace prepare
// against git ls-files -z | tar --null -T - -c | ssh vm tar -x.
func BenchmarkWorkspaceCopy(b *testing.B) {
	e := bootEnv(b)
	repo := bigRepo(b, filepath.Join(b.TempDir(), "big"), 20000, 10<<10)
	e.ok("vm", "create", "--image", "fixture", "--name", "wsb", "--disk", "4G", "--memory", "1G")
	e.ok("vm", "ssh", "wsb", "--", "true") // pins the host key
	ip := e.inspect("wsb").IP
	home := filepath.Join(e.home, "config", "ssh")
	ssh := fmt.Sprintf("ssh -i %s -o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes -o LogLevel=ERROR root@%s",
		filepath.Join(home, "id_ed25519"), filepath.Join(home, "known_hosts"), ip)
	var banger, viaAgent, bare, bareGit time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		banger += timed(func() {
			e.ok("vm", "workspace", "prepare", "wsb", repo, "--guest-path", fmt.Sprintf("/root/w%d", i))
		})
		viaAgent += timed(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			c := e.cmd(ctx, "vm", "workspace", "prepare", "wsb", repo, "--guest-path", fmt.Sprintf("/root/a%d", i))
			c.Env = append(c.Env, "BANGER_WORKSPACE_VIA=agent")
			if out, err := c.CombinedOutput(); err != nil {
				b.Fatalf("workspace prepare via the agent: %v\n%s", err, out)
			}
		})
		bare += timed(func() {
			run(b, "ip", "netns", "exec", e.ns, "sh", "-c", barePipe(repo, ssh, fmt.Sprintf("/root/b%d", i), false))
		})
		bareGit += timed(func() {
			run(b, "ip", "netns", "exec", e.ns, "sh", "-c", barePipe(repo, ssh, fmt.Sprintf("/root/g%d", i), true))
		})
		b.StopTimer()
		e.ok("vm", "exec", "wsb", "--", "rm", "-rf", fmt.Sprintf("/root/w%d", i), fmt.Sprintf("/root/a%d", i), fmt.Sprintf("/root/b%d", i), fmt.Sprintf("/root/g%d", i))
		b.StartTimer()
	}
	b.StopTimer()
	report(b, "workspace copy (200 MB, 20k files) vs git ls-files | tar | ssh tar -x", banger, bare, "copy")
	fmt.Printf("workspace copy vs the same pipe with .git included (what banger copies): ratio %.2f\n",
		banger.Seconds()/bareGit.Seconds())
	fmt.Printf("workspace copy through the guest agent (no sshd): %.3fs, ratio %.2f to the pipe with .git\n",
		viaAgent.Seconds()/float64(b.N), viaAgent.Seconds()/bareGit.Seconds())
}

// barePipe is BenchmarkWorkspaceCopy's bare side: the repository's
// tracked files (and .git with withGit) through tar over ssh into dest.
func barePipe(repo, ssh, dest string, withGit bool) string {
	list := "git ls-files -z"
	if withGit {
		list = "{ git ls-files -z; printf '.git\\0'; }"
	}
	return fmt.Sprintf("cd %s && %s | tar --null -T - -c | %s 'mkdir -p %s && tar -x -C %s'", repo, list, ssh, dest, dest)
}

// bigRepo makes a committed git repository of n files of size bytes each
// (hex text, so it compresses about as well as source code does).
func bigRepo(b testing.TB, dir string, n, size int) string {
	buf := make([]byte, size/2)
	for i := 0; i < n; i++ {
		p := filepath.Join(dir, fmt.Sprintf("d%03d", i%200), fmt.Sprintf("f%05d.txt", i))
		os.MkdirAll(filepath.Dir(p), 0o755)
		rand.Read(buf)
		if err := os.WriteFile(p, []byte(hex.EncodeToString(buf)), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	git(b, dir, "init", "-q")
	git(b, dir, "config", "gc.auto", "0") // no background gc racing the copy
	git(b, dir, "add", ".")
	git(b, dir, "commit", "-qm", "big")
	git(b, dir, "gc", "-q") // packed, as a repository that lived a while is
	return dir
}
