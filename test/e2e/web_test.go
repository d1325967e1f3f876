package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"
)

const webURL = "http://127.0.0.1:7777/"

// webClient is an HTTP client whose connections start inside ns.
func webClient(ns string) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, a string) (net.Conn, error) { return nsDial(ctx, ns, network, a) },
	}}
}

// The web UI in real Chromium against a real daemon and a VM under QEMU:
// a VM the CLI creates appears without a reload, the console shows the
// boot, a shell typed into in the page answers, a session that ends says
// so, stop from the page stops it (the CLI agrees), delete asks first, a
// cross-origin POST is refused and changes nothing, a VM deleted from the
// CLI is shown gone, and the page rides out a daemon restart. Each page's
// screenshot is kept (go test -artifacts -outputdir DIR).
func TestWebUI(t *testing.T) {
	e := bootEnv(t)
	e.ok("daemon", "start")
	ctx := e.browser(t)

	navigate(t, ctx, webURL)
	waitJS(t, ctx, 10*time.Second, "the VMs page and the event stream", `document.querySelector('#vms') && document.querySelector('#conn').dataset.state === 'up'`)
	js[bool](t, ctx, `window.bangerNoReload = true`)

	// The VM appears while the CLI is still creating it, without a reload.
	created := make(chan result, 1)
	start := time.Now()
	go func() { created <- e.banger("vm", "create", "--image", "fixture", "--name", "web1", "--memory", "1G") }()
	waitJS(t, ctx, 2*time.Second, "web1 on the VMs page", `document.querySelector('tr[data-vm="web1"]')`)
	t.Logf("web1 on the page %s after vm create started", time.Since(start).Round(time.Millisecond))
	if r := <-created; r.code != 0 {
		t.Fatalf("vm create: exit %d: %s", r.code, r.stderr)
	}
	waitJS(t, ctx, 5*time.Second, "web1 shown running", `document.querySelector('tr[data-vm="web1"] [data-state="running"]')`)
	if !js[bool](t, ctx, `window.bangerNoReload === true`) {
		t.Fatal("the VMs page reloaded")
	}
	row := js[string](t, ctx, `document.querySelector('tr[data-vm="web1"]').innerText`)
	mustContain(t, "web1's row", row, "running", "fixture", "qemu", "1.0 GiB", e.inspect("web1").IP)
	screenshot(t, ctx, "vms")

	// The VM's page: details, and the console with the guest's boot lines.
	navigate(t, ctx, webURL+"#/vm/web1")
	waitJS(t, ctx, 10*time.Second, "the console shows the kernel's boot lines", `document.querySelector('#console').textContent.includes('Linux version')`)
	mustContain(t, "details", js[string](t, ctx, `document.querySelector('#vm-details').innerText`), "fixture", "generic-6.1", "qemu")

	// A shell in the page: type, read the answer from the rendered terminal.
	js[bool](t, ctx, `document.querySelector('#new-shell').click(), true`)
	waitJS(t, ctx, 20*time.Second, "the terminal attached", `document.querySelector('#term-status').textContent.startsWith('attached')`)
	typeInto(t, ctx, "echo hi-from-browser\r")
	waitJS(t, ctx, 20*time.Second, "the shell's answer in the terminal",
		`document.querySelector('.xterm-rows').innerText.split('\n').some((l) => l.trim() === 'hi-from-browser')`)
	screenshot(t, ctx, "vm")
	js[bool](t, ctx, `document.querySelector('#terminal').scrollIntoView(), true`)
	screenshot(t, ctx, "vm-terminal")
	typeInto(t, ctx, "exit 7\r")
	waitJS(t, ctx, 20*time.Second, "the terminal says the session ended",
		`document.querySelector('#term-status').textContent.includes('ended (exit code 7)')`)
	sessions := e.ok("vm", "session", "list", "web1", "--json")
	mustContain(t, "the page's shell, as the CLI sees it", sessions, `"stdin_mode": "tty"`, `"exit_code": 7`)

	// A pipe session the CLI started: attach from the page, type a line,
	// read cat's answer.
	e.ok("vm", "session", "start", "web1", "--name", "cat1", "--", "cat")
	waitJS(t, ctx, 10*time.Second, "cat1 in the session list", `document.querySelector('tr[data-session="cat1"] button[data-action="attach"]')`)
	js[bool](t, ctx, `document.querySelector('tr[data-session="cat1"] button[data-action="attach"]').click(), true`)
	waitJS(t, ctx, 20*time.Second, "attached to cat1", `document.querySelector('#term-status').textContent.startsWith('attached to session cat1 (pipe)')`)
	typeInto(t, ctx, "ping-pipe\r")
	waitJS(t, ctx, 20*time.Second, "cat's answer (and the page's echo)",
		`document.querySelector('.xterm-rows').innerText.split('\n').filter((l) => l.trim() === 'ping-pipe').length >= 2`)

	// A POST from another origin is refused, from a script and from a page
	// on another site in the same browser; the VM is untouched.
	req, _ := http.NewRequest("POST", webURL+"api/v1/vms/web1/stop", strings.NewReader("{}"))
	req.Header.Set("Origin", "http://evil.example")
	resp, err := webClient(e.ns).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-origin POST: %d %s, want 403", resp.StatusCode, body)
	}
	evil := evilSite(t, e.ns)
	navigate(t, ctx, evil)
	waitJS(t, ctx, 10*time.Second, "the other site's POST answered", `document.title === 'sent'`)
	time.Sleep(time.Second)
	if v := e.inspect("web1"); v.State != "running" {
		t.Fatalf("after the cross-origin POSTs web1 is %s, want running", v.State)
	}
	mustContain(t, "daemon log", readLog(t, e), "refused web request", "http://evil.example", "http://127.0.0.1:7778")

	// Snapshot and fork from the page; the CLI agrees.
	navigate(t, ctx, webURL+"#/vm/web1")
	waitJS(t, ctx, 10*time.Second, "snapshot enabled", `!document.querySelector('#vm-snapshot').disabled`)
	js[bool](t, ctx, `document.querySelector('#vm-snapshot').click(), true`)
	waitJS(t, ctx, 60*time.Second, "the snapshot taken", `document.querySelector('#vm-notice').textContent.startsWith('Snapshot ')`)
	if out := e.ok("snapshot", "list", "--json"); !strings.Contains(out, `"source_vm": "web1"`) && !strings.Contains(out, `"source_vm":"web1"`) {
		t.Fatalf("snapshot list after a snapshot from the page:\n%s", out)
	}
	js[bool](t, ctx, `document.querySelector('#fork-name').value = 'webfork', document.querySelector('#vm-fork').click(), true`)
	waitJS(t, ctx, 3*time.Minute, "the fork made", `document.querySelector('#fork-link')`)
	if v := e.inspect("webfork"); v.State != "running" {
		t.Fatalf("the fork made from the page is %s, want running", v.State)
	}
	screenshot(t, ctx, "vm-forked")
	e.ok("vm", "delete", "--force", "webfork")

	// Stop from the page; the CLI agrees.
	navigate(t, ctx, webURL+"#/vm/web1")
	waitJS(t, ctx, 10*time.Second, "stop enabled", `!document.querySelector('#vm-stop').disabled`)
	js[bool](t, ctx, `document.querySelector('#vm-stop').click(), true`)
	waitJS(t, ctx, 60*time.Second, "web1 shown stopped", `document.querySelector('#vm-state [data-state="stopped"]')`)
	if v := e.inspect("web1"); v.State != "stopped" {
		t.Fatalf("after stop from the page the CLI says %s", v.State)
	}

	// Delete asks first: cancel keeps the VM, OK deletes it.
	js[bool](t, ctx, `document.querySelector('#vm-delete').click(), true`)
	waitJS(t, ctx, 5*time.Second, "the confirmation", `document.querySelector('#confirm').open`)
	mustContain(t, "confirmation", js[string](t, ctx, `document.querySelector('#confirm-text').textContent`), "Delete VM web1?")
	screenshot(t, ctx, "vm-delete-confirm")
	js[bool](t, ctx, `document.querySelector('#confirm-cancel').click(), true`)
	time.Sleep(500 * time.Millisecond)
	e.inspect("web1") // still there
	js[bool](t, ctx, `document.querySelector('#vm-delete').click(), true`)
	waitJS(t, ctx, 5*time.Second, "the confirmation again", `document.querySelector('#confirm').open`)
	js[bool](t, ctx, `document.querySelector('#confirm-ok').click(), true`)
	waitJS(t, ctx, 30*time.Second, "the page says web1 is gone", `!document.querySelector('#notice').hidden && document.querySelector('#notice').textContent.includes('was deleted')`)
	if out := e.ok("vm", "list", "--json"); strings.Contains(out, `"web1"`) {
		t.Fatalf("web1 still listed after delete from the page: %s", out)
	}

	// A VM deleted from the CLI while its page is open.
	e.ok("vm", "create", "--image", "fixture", "--name", "web2", "--no-start")
	navigate(t, ctx, webURL+"#/vm/web2")
	waitJS(t, ctx, 10*time.Second, "web2's page", `document.querySelector('#vm-state [data-state="created"]')`)
	e.ok("vm", "delete", "web2")
	waitJS(t, ctx, 5*time.Second, "the page says web2 is gone", `document.querySelector('#notice').textContent.includes('VM web2 was deleted')`)

	// The other pages.
	navigate(t, ctx, webURL+"#/images")
	waitJS(t, ctx, 10*time.Second, "the images page", `document.querySelector('#images') && document.querySelector('#kernels')`)
	mustContain(t, "images page", js[string](t, ctx, `document.querySelector('main').innerText`), "fixture", "generic-6.1", "GiB")
	screenshot(t, ctx, "images")
	navigate(t, ctx, webURL+"#/doctor")
	waitJS(t, ctx, 30*time.Second, "the doctor page", `document.querySelector('#doctor')`)
	mustContain(t, "doctor page", js[string](t, ctx, `document.querySelector('#doctor').innerText`), "qemu-system-x86_64", "web ui", "served at http://127.0.0.1:7777/")
	screenshot(t, ctx, "doctor")

	// The daemon goes away while the page is open, and comes back.
	navigate(t, ctx, webURL)
	waitJS(t, ctx, 10*time.Second, "connected", `document.querySelector('#conn').dataset.state === 'up'`)
	e.ok("daemon", "stop")
	waitJS(t, ctx, 15*time.Second, "the page says the daemon is gone", `document.querySelector('#conn').dataset.state === 'down'`)
	mustContain(t, "connection line", js[string](t, ctx, `document.querySelector('#conn').textContent`), "lost connection to bangerd")
	screenshot(t, ctx, "daemon-down")
	e.ok("daemon", "start")
	waitJS(t, ctx, 30*time.Second, "the page reconnected", `document.querySelector('#conn').textContent.startsWith('reconnected')`)
	// The new daemon's token was fetched: a change from the page works.
	e.ok("vm", "create", "--image", "fixture", "--name", "web3", "--no-start")
	waitJS(t, ctx, 2*time.Second, "web3 on the page after the restart", `document.querySelector('tr[data-vm="web3"]')`)
	status := js[string](t, ctx, `(async () => { const {api} = await import('/assets/api.js'); try { await api('DELETE', '/vms/web3'); return 'ok'; } catch (e) { return e.message; } })()`)
	if status != "ok" {
		t.Fatalf("delete from the page after the daemon restarted: %s", status)
	}
}

// typeInto types keys into the page's terminal as a keyboard does: a
// keydown carrying the text (the browser makes the keypress and input
// events of it), then a keyup. (chromedp.SendKeys adds a separate char
// event, which xterm.js reads as a second key press.)
func typeInto(t *testing.T, ctx context.Context, keys string) {
	t.Helper()
	err := chromedp.Do(ctx, chromedp.Focus(chromedp.CSS(".xterm-helper-textarea")), chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		for _, r := range keys {
			down := input.DispatchKeyEventParams{Type: input.DispatchKeyEventTypeKeyDown, Key: string(r), Text: string(r)}
			if r == '\r' {
				down.Key, down.Code, down.WindowsVirtualKeyCode = "Enter", "Enter", 13
			}
			up := down
			up.Type, up.Text = input.DispatchKeyEventTypeKeyUp, ""
			for _, ev := range []input.DispatchKeyEventParams{down, up} {
				if _, err := cdp.Call(ctx, tg, input.DispatchKeyEvent, ev); err != nil {
					return err
				}
			}
		}
		return nil
	}))
	if err != nil {
		t.Fatalf("typing %q: %v", keys, err)
	}
}

// evilSite serves, inside ns on 127.0.0.1:7778, a page of another origin
// that POSTs to the UI as a hostile site would; it returns its URL.
func evilSite(t *testing.T, ns string) string {
	t.Helper()
	ln := nsListen(t, ns, "127.0.0.1:7778")
	page := `<!doctype html><title>sending</title><script>
fetch('` + webURL + `api/v1/vms/web1/stop', {method: 'POST', mode: 'no-cors', body: '{}'})
  .finally(() => fetch('` + webURL + `api/v1/vms/web1?force=true', {method: 'DELETE', mode: 'no-cors'}).catch(() => {}))
  .finally(() => { document.title = 'sent'; });
</script>`
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, page)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://127.0.0.1:7778/"
}

func readLog(t *testing.T, e *env) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(e.home, "state", "bangerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// web_listen_addr already in use: the daemon starts and serves the CLI,
// and the UI's error is in doctor and the log.
func TestWebListenAddrInUse(t *testing.T) {
	e := newEnv(t)
	held := nsListen(t, e.ns, "127.0.0.1:7777")
	defer held.Close()
	e.ok("daemon", "start")
	e.ok("vm", "list")
	var rep struct {
		Checks []struct{ Name, Status, Detail, Fix string }
	}
	r := e.banger("doctor", "--json")
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("doctor --json: %v\n%s", err, r.stdout)
	}
	found := false
	for _, c := range rep.Checks {
		if c.Name == "web ui" {
			found = true
			if c.Status != "fail" || !strings.Contains(c.Detail, "address already in use") || !strings.Contains(c.Fix, "web_listen_addr") {
				t.Errorf("web ui check = %+v, want fail: address already in use, with a fix", c)
			}
		}
	}
	if !found {
		t.Fatalf("doctor has no web ui check: %s", r.stdout)
	}
	mustContain(t, "daemon log", readLog(t, e), "web ui not served", "address already in use")
}
