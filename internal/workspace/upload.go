package workspace

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"golang.org/x/crypto/ssh"
)

var errSendEnded = errors.New("workspace upload ended")

// Send pipes the set's tar stream into send, which uploads it somewhere.
// When reading a local file fails, that failure is returned, since it is
// the cause of the broken upload.
func (s Set) Send(ctx context.Context, send func(io.Reader) error) error {
	pr, pw := io.Pipe()
	werr := make(chan error, 1)
	go func() {
		err := s.WriteTar(ctx, pw)
		pw.CloseWithError(err)
		werr <- err
	}()
	err := send(pr)
	pr.CloseWithError(errSendEnded)
	if e := <-werr; e != nil && !errors.Is(e, errSendEnded) {
		return e
	}
	return err
}

// ExtractOverSSH runs the guest's tar over c to extract r under dir
// (created when missing). As root, tar keeps the archive's modes and
// ownership.
func ExtractOverSSH(c *ssh.Client, dir string, r io.Reader) error {
	sess, err := c.NewSession()
	if err != nil {
		return fmt.Errorf("ssh session: %w", err)
	}
	defer sess.Close()
	var stderr strings.Builder
	sess.Stdin, sess.Stderr = r, &stderr
	q := "'" + strings.ReplaceAll(dir, "'", `'\''`) + "'"
	if err := sess.Run("mkdir -p -- " + q + " && exec tar -x -f - -C " + q); err != nil {
		return fmt.Errorf("guest tar: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return nil
}
