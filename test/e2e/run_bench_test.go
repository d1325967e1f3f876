package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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
	var banger, reflink, sparse, synced time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		name := fmt.Sprintf("c%d", i)
		banger += timed(func() { e.ok("vm", "create", "--no-start", "--image", "big", "--name", name) })
		reflink += timed(func() { run(b, "cp", "--reflink=auto", im.Rootfs, dst) })
		os.Remove(dst)
		sparse += timed(func() { run(b, "cp", "--sparse=always", im.Rootfs, dst) })
		os.Remove(dst)
		run(b, "sync")
		synced += timed(func() { run(b, "sh", "-c", "cp --sparse=always \"$0\" \"$1\" && sync -f \"$1\"", im.Rootfs, dst) })
		os.Remove(dst)
		run(b, "sync")
		b.StopTimer()
		e.ok("vm", "delete", name)
		run(b, "sync")
		b.StartTimer()
	}
	b.StopTimer()
	report(b, "vm create (2 GiB) vs cp --reflink=auto", banger, reflink, "create")
	fmt.Printf("vm create (2 GiB) vs cp --sparse=always: ratio %.2f\n", banger.Seconds()/sparse.Seconds())
	// vm create's disk is on stable storage when it returns (debugfs
	// fsyncs the copy when it writes the VM's keys); this is the same
	// promise from cp.
	fmt.Printf("vm create (2 GiB) vs cp --sparse=always && sync -f: ratio %.2f\n", banger.Seconds()/synced.Seconds())
}

// vm run -- true against bare qemu booting the same kernel, initrd and
// rootfs (a copy of a banger VM's disk, so sshd has its keys) to sshd and
// running ssh true.
func BenchmarkRunTrue(b *testing.B) {
	e := bootEnv(b)
	args, tmpl := bareArgsFrom(b, e)
	key := filepath.Join(e.home, "config", "ssh", "id_ed25519")
	var banger, bare time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		name := fmt.Sprintf("t%d", i)
		banger += timed(func() { e.ok("vm", "run", "--image", "fixture", "--name", name, "--", "true") })
		b.StopTimer()
		e.ok("vm", "delete", "--force", name)
		dir := filepath.Dir(tmpl)
		run(b, "cp", "--sparse=always", tmpl, filepath.Join(dir, "rootfs.ext4"))
		os.Remove(filepath.Join(dir, "console.log"))
		b.StartTimer()
		bare += bareSSHTrue(b, e, args, dir, key)
	}
	b.StopTimer()
	report(b, "vm run -- true vs bare qemu to sshd + ssh true", banger, bare, "run")
}

// bareArgsFrom boots a banger VM once, takes its qemu command line and a
// copy of its disk (the template; each boot uses a fresh rootfs.ext4 copy
// next to it), and turns the command line into one that boots
// without banger: user networking with port 2222 forwarded to sshd.
func bareArgsFrom(b *testing.B, e *env) ([]string, string) {
	e.ok("vm", "create", "--image", "fixture", "--name", "tmpl")
	var v struct {
		PID int
		Dir string
	}
	json.Unmarshal([]byte(e.ok("vm", "inspect", "tmpl")), &v)
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", v.PID))
	if err != nil {
		b.Fatal(err)
	}
	e.ok("vm", "stop", "tmpl")
	dir := b.TempDir()
	tmpl := filepath.Join(dir, "template.ext4")
	run(b, "cp", "--sparse=always", filepath.Join(v.Dir, "rootfs.ext4"), tmpl)
	e.ok("vm", "delete", "tmpl")
	var args []string
	for _, a := range strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")[1:] {
		a = strings.ReplaceAll(a, v.Dir, dir)
		if strings.HasPrefix(a, "tap,") {
			id := strings.Split(strings.TrimPrefix(a, "tap,id="), ",")[0]
			a = "user,id=" + id + ",hostfwd=tcp:127.0.0.1:2222-:22"
		}
		if strings.Contains(a, "banger.net=") {
			var fs []string
			for _, f := range strings.Fields(a) {
				if strings.HasPrefix(f, "banger.net=") {
					f = "banger.net=addr=10.0.2.15/24,gw=10.0.2.2"
				}
				fs = append(fs, f)
			}
			a = strings.Join(fs, " ")
		}
		args = append(args, a)
	}
	return args, tmpl
}

// bareSSHTrue boots args (whose files are in dir) in the env's namespace
// and returns the time until ssh true succeeds.
func bareSSHTrue(b *testing.B, e *env, a []string, dir, key string) time.Duration {
	start := time.Now()
	q := exec.Command("ip", append([]string{"netns", "exec", e.ns, "qemu-system-x86_64"}, a...)...)
	var qerr strings.Builder
	q.Stderr = &qerr
	if err := q.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { q.Process.Kill(); q.Wait() }()
	for time.Since(start) < 3*time.Minute {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		err := exec.CommandContext(ctx, "ip", "netns", "exec", e.ns, "ssh", "-i", key, "-p", "2222",
			"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
			"-o", "ConnectTimeout=5", "-o", "BatchMode=yes", "root@127.0.0.1", "true").Run()
		cancel()
		if err == nil {
			return time.Since(start)
		}
		time.Sleep(100 * time.Millisecond)
	}
	con, _ := os.ReadFile(filepath.Join(dir, "console.log"))
	b.Fatalf("bare qemu never answered ssh true\nargs: %q\nqemu: %s\nconsole: %s", a, qerr.String(), tail(string(con), 3000))
	return 0
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
			run(b, "ip", "netns", "exec", e.ns, "sh", "-c", fmt.Sprintf(
				"cd %s && git ls-files -z | tar --null -T - -c | %s 'mkdir -p /root/b%d && tar -x -C /root/b%d'", repo, ssh, i, i))
		})
		bareGit += timed(func() {
			run(b, "ip", "netns", "exec", e.ns, "sh", "-c", fmt.Sprintf(
				"cd %s && { git ls-files -z; printf '.git\\0'; } | tar --null -T - -c | %s 'mkdir -p /root/g%d && tar -x -C /root/g%d'", repo, ssh, i, i))
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

// bigRepo makes a committed git repository of n files of size bytes each
// (hex text, so it compresses about as well as source code does).
func bigRepo(b *testing.B, dir string, n, size int) string {
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
