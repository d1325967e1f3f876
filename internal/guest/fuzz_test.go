package guest

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"
)

// FuzzAgentAnswers: whatever bytes a guest agent answers a request with
// before it ends the stream, each of the client's calls returns, with a
// result or an error, within its bound, and never panics. The seeds are
// well-formed answers, answers cut short, frames of every type and
// length headers past the limit; the fuzzer mutates from there.
func FuzzAgentAnswers(f *testing.F) {
	frame := func(ft FrameType, payload string) []byte {
		return append(frameHeader(ft, uint32(len(payload))), payload...)
	}
	cat := func(parts ...[]byte) []byte {
		var out []byte
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	ok := frame(FrameResponse, `{"pid":7,"hostname":"g","version":"1"}`)
	f.Add(ok)
	f.Add(cat(ok, frame(FrameStdout, "out"), frame(FrameStderr, "err"), frame(FrameExit, `{"code":3}`)))
	f.Add(cat(ok, frame(FrameData, "file"), frame(FrameEOF, "")))
	f.Add(frame(FrameError, `{"code":"not_found","message":"no"}`))
	f.Add(cat(ok, frame(FrameExit, `{"code":`)))
	f.Add(frame(FrameResponse, `[1,2`))
	f.Add(frameHeader(FrameStdout, MaxFrameSize+1))
	f.Add(frameHeader(FrameResponse, 1<<31))
	f.Add(ok[:len(ok)/2])
	for ft := FrameType(0); ft <= FrameExit+1; ft++ {
		f.Add(frame(ft, "{}"))
	}
	f.Fuzz(func(t *testing.T, answer []byte) {
		c := fakeAgent(t, func(_ net.Conn, st net.Conn) {
			defer st.Close()
			if _, err := ReadFrame(st); err != nil {
				return
			}
			st.Write(answer)
		})
		for name, call := range hostileCalls(c) {
			if err := endsInTime(call); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
		}
	})
}

// endsInTime runs call with a short context and reports a panic, or a
// call still running well after its context ended.
func endsInTime(call func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- fmt.Errorf("panic: %v", p)
			}
		}()
		call(ctx)
		done <- nil
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(callBound):
		return fmt.Errorf("still running %s after its %s context ended", callBound, callTimeout)
	}
}
