// Command fakeopencode stands in for `opencode acp` in e2e tests: it reads
// newline-delimited JSON-RPC requests on stdin and answers each on stdout
// with its params echoed byte for byte. Method "cwd" answers the working
// directory; "exit" exits with params.code. At EOF it exits 0. It writes
// one line to stderr at start, to show stderr is kept apart.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
)

type request struct {
	ID     json.RawMessage `json:"id"`
	Method string          `json:"method"`
	Params json.RawMessage `json:"params"`
}

func main() {
	if len(os.Args) != 2 || os.Args[1] != "acp" {
		fmt.Fprintf(os.Stderr, "fakeopencode: want the single argument acp, got %q\n", os.Args[1:])
		os.Exit(2)
	}
	fmt.Fprintln(os.Stderr, "fakeopencode: acp server ready")
	in := bufio.NewReaderSize(os.Stdin, 1<<20)
	out := bufio.NewWriterSize(os.Stdout, 1<<20)
	for {
		line, err := in.ReadBytes('\n')
		if err == io.EOF && len(line) == 0 {
			out.Flush()
			os.Exit(0)
		}
		if err != nil && err != io.EOF {
			fmt.Fprintln(os.Stderr, "fakeopencode: reading stdin:", err)
			os.Exit(3)
		}
		var req request
		if err := json.Unmarshal(line, &req); err != nil {
			fmt.Fprintf(os.Stderr, "fakeopencode: bad request (%d bytes): %v\n", len(line), err)
			os.Exit(4)
		}
		result := req.Params
		switch req.Method {
		case "cwd":
			wd, _ := os.Getwd()
			result, _ = json.Marshal(wd)
		case "exit":
			var p struct{ Code int }
			json.Unmarshal(req.Params, &p)
			out.Flush()
			os.Exit(p.Code)
		}
		out.WriteString(`{"jsonrpc":"2.0","id":` + string(req.ID) + `,"result":`)
		out.Write(result)
		out.WriteString("}\n")
		// Answer now: the client waits for each reply (an ACP client
		// would), so nothing may sit in a buffer.
		if in.Buffered() == 0 {
			out.Flush()
		}
	}
}
