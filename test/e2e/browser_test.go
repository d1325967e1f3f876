package e2e

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"banger/internal/prereq"
)

// browser starts Debian's chromium, headless, inside the env's network
// namespace (so the page reaches the daemon's web UI on the namespace's
// 127.0.0.1), and returns a chromedp context driving it over a pipe.
func (e *env) browser(t *testing.T) context.Context {
	t.Helper()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		prereq.Missing(t, "the web UI test needs Debian's chromium (apt-get install chromium)")
	}
	// chromedp runs this in place of chromium; the DevTools pipe (fds 3
	// and 4) goes through ip netns exec untouched.
	wrapper := filepath.Join(t.TempDir(), "chromium-in-netns")
	script := fmt.Sprintf("#!/bin/sh\nexec ip netns exec %s %s \"$@\"\n", e.ns, bin)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(wrapper), chromedp.NoSandbox,
		chromedp.WindowSize(1280, 1000), chromedp.UserDataDir(t.TempDir()))
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	ctx, cancel2 := chromedp.NewContext(actx)
	t.Cleanup(cancel2)
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return ctx
}

// js evaluates expr in the page and returns its value.
func js[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(cctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("evaluating %s: %v", expr, err)
	}
	return v
}

// waitJS polls expr in the page until it is true, failing after d; it
// returns how long that took.
func waitJS(t *testing.T, ctx context.Context, d time.Duration, what, expr string) time.Duration {
	t.Helper()
	start := time.Now()
	for !js[bool](t, ctx, "!!("+expr+")") {
		if time.Since(start) > d {
			t.Logf("the page shows:\n%s", js[string](t, ctx, `document.body.innerText`))
			t.Fatalf("after %s: %s never happened (%s)", d, what, expr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start)
}

// navigate opens url in the page.
func navigate(t *testing.T, ctx context.Context, url string) {
	t.Helper()
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("opening %s: %v", url, err)
	}
}

// screenshot saves the window (1280x1000, as scrolled) as name.png
// under the test's artifact directory (kept with go test -artifacts -outputdir DIR) and fails the
// test if it is blank: a page that rendered shows many colours.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	buf, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	p := filepath.Join(t.ArtifactDir(), name+".png")
	if err := os.WriteFile(p, buf, 0o644); err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(buf))
	if err != nil {
		t.Fatalf("screenshot %s is not a PNG: %v", name, err)
	}
	if n := colours(img); n < 8 {
		t.Fatalf("screenshot %s looks blank: %d colours", p, n)
	}
	t.Logf("screenshot: %s", p)
}

func colours(img image.Image) int {
	seen := map[uint32]bool{}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y += 3 {
		for x := b.Min.X; x < b.Max.X; x += 3 {
			r, g, bl, _ := img.At(x, y).RGBA()
			seen[r>>8<<16|g>>8<<8|bl>>8] = true
		}
	}
	return len(seen)
}
