package e2e

import (
	"encoding/json"
	"fmt"
	"strconv"
	"testing"
	"time"
)

// vm create with the default 16 GiB disk against --disk equal to the
// image's size (no grow), for both ways a disk grows: the fixture image
// (mkfs.ext4) only gets a longer sparse file and the guest grows / online
// at boot; the tar2ext4 image (sparse_super2, as every pulled image) is
// grown by resize2fs on the host. Measured with --no-start (the host's
// part alone) and booted to agent-ready (the guest's part included).
func BenchmarkVMCreateGrow(b *testing.B) {
	e := bootEnv(b)
	e.ok("image", "register", "--name", "t2e", "--rootfs", tar2ext4Fixture(b), "--kernel-ref", "generic-6.1")
	images := []struct{ name, how string }{{"fixture", "guest grows online"}, {"t2e", "host resize2fs"}}
	sizes := map[string]string{}
	for _, im := range images {
		var v struct {
			SizeBytes int64 `json:"size_bytes"`
		}
		json.Unmarshal([]byte(e.ok("image", "inspect", im.name, "--json")), &v)
		sizes[im.name] = strconv.FormatInt(v.SizeBytes>>20, 10) + "M"
	}
	e.ok("vm", "create", "--no-start", "--image", "fixture", "--name", "warm") // daemon and caches warm
	e.ok("vm", "delete", "warm")
	type pair struct{ grow, same time.Duration }
	noStart, booted := map[string]*pair{}, map[string]*pair{}
	create := func(extra ...string) time.Duration {
		args := append([]string{"vm", "create", "--name", "g", "--memory", "512M"}, extra...)
		d := timed(func() { e.ok(args...) })
		e.ok("vm", "delete", "--force", "g")
		return d
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, im := range images {
			if noStart[im.name] == nil {
				noStart[im.name], booted[im.name] = &pair{}, &pair{}
			}
			noStart[im.name].same += create("--image", im.name, "--no-start", "--disk", sizes[im.name])
			noStart[im.name].grow += create("--image", im.name, "--no-start")
			booted[im.name].same += create("--image", im.name, "--disk", sizes[im.name])
			booted[im.name].grow += create("--image", im.name)
		}
	}
	b.StopTimer()
	for _, im := range images {
		for _, m := range []struct {
			what string
			p    *pair
		}{{"vm create --no-start", noStart[im.name]}, {"vm create (booted)", booted[im.name]}} {
			g, s := m.p.grow.Seconds()/float64(b.N), m.p.same.Seconds()/float64(b.N)
			b.ReportMetric(g/s, "ratio-"+im.name)
			fmt.Printf("%s, %s image (%s): 16 GiB %.3fs, --disk %s (no grow) %.3fs, ratio %.2f\n",
				m.what, im.name, im.how, g, sizes[im.name], s, g/s)
		}
	}
}
