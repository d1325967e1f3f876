// Command portsink is the guest side of the port forwarding tests: an
// HTTP server, a TCP sink that answers with the number of bytes it read
// (once the client half-closes), and a UDP echo, on the ports given.
//
//	portsink -http 8080 -sink 9000 -udp 5353
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
)

func main() {
	httpPort := flag.Int("http", 0, "serve HTTP on this port")
	sinkPort := flag.Int("sink", 0, "count bytes on this TCP port")
	udpPort := flag.Int("udp", 0, "echo UDP datagrams on this port")
	flag.Parse()
	if *sinkPort != 0 {
		ln, err := net.Listen("tcp", fmt.Sprintf(":%d", *sinkPort))
		if err != nil {
			log.Fatal(err)
		}
		go sink(ln)
	}
	if *udpPort != 0 {
		pc, err := net.ListenPacket("udp", fmt.Sprintf(":%d", *udpPort))
		if err != nil {
			log.Fatal(err)
		}
		go echo(pc)
	}
	if *httpPort != 0 {
		http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "hello from the guest, you are %s\n", r.RemoteAddr)
		})
		go func() { log.Fatal(http.ListenAndServe(fmt.Sprintf(":%d", *httpPort), nil)) }()
	}
	fmt.Println("portsink ready")
	select {}
}

func sink(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go func() {
			defer c.Close()
			buf := make([]byte, 1<<20)
			n, err := io.CopyBuffer(struct{ io.Writer }{io.Discard}, struct{ io.Reader }{c}, buf)
			if err != nil {
				fmt.Fprintf(c, "error after %d: %v", n, err)
				return
			}
			fmt.Fprintf(c, "%d", n)
		}()
	}
}

func echo(pc net.PacketConn) {
	buf := make([]byte, 64<<10)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			log.Fatal(err)
		}
		pc.WriteTo(append([]byte("echo:"), buf[:n]...), from)
	}
}
