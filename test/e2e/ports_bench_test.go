package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"testing"
	"time"
)

// BenchmarkPortForward: 1 GiB sent host→guest over TCP through a port
// forward (127.0.0.1:19000 → bangerd → guest:9000) against the same
// transfer straight to the guest's address over the bridge, in the same
// run, to the same sink in the guest (testdata/portsink: it reads to the
// end and answers with the count, so both clocks stop when the last byte
// arrived). The ratio is forward/direct throughput; the aim is ≥ 0.8.
func BenchmarkPortForward(b *testing.B) {
	e := bootEnv(b)
	e.ok("vm", "create", "--image", "fixture", "--name", "fwd", "-p", "127.0.0.1:19000:9000")
	startPortsink(b, e, "fwd", portsinkBin(b))
	ip := e.inspect("fwd").IP
	direct, forward := net.JoinHostPort(ip, "9000"), "127.0.0.1:19000"
	pollUntil(b, time.Minute, "the guest's sink answers", func() bool { return sinkAnswers(e.ns, forward) })
	const size = 1 << 30
	// Warm both paths (the guest's page cache, TCP's windows).
	sinkSend(b, e.ns, forward, 64<<20)
	sinkSend(b, e.ns, direct, 64<<20)
	var viaFwd, viaIP time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// Alternate which goes first, so neither always gets a cooler guest.
		order := []string{forward, direct}
		if i%2 == 1 {
			order = []string{direct, forward}
		}
		for _, addr := range order {
			n, d := sinkSend(b, e.ns, addr, size)
			if n != size {
				b.Fatalf("the sink behind %s counted %d bytes, want %d", addr, n, size)
			}
			if addr == forward {
				viaFwd += d
			} else {
				viaIP += d
			}
		}
	}
	b.StopTimer()
	mib := float64(size) / (1 << 20) * float64(b.N)
	fwdRate, ipRate := mib/viaFwd.Seconds(), mib/viaIP.Seconds()
	b.ReportMetric(fwdRate, "forward-MiB/s")
	b.ReportMetric(ipRate, "direct-MiB/s")
	b.ReportMetric(fwdRate/ipRate, "ratio")
	fmt.Printf("1 GiB host→guest over tcp: through the port forward %.1f MiB/s, straight to the guest ip %.1f MiB/s, ratio %.2f (aim ≥ 0.8)\n",
		fwdRate, ipRate, fwdRate/ipRate)
}

// sinkAnswers says whether the sink behind addr counts an empty
// connection.
func sinkAnswers(ns, addr string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := nsDial(ctx, ns, "tcp", addr)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.(*net.TCPConn).CloseWrite()
	b, err := io.ReadAll(c)
	return err == nil && string(b) == "0"
}
