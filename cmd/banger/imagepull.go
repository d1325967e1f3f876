package main

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/catalog"
	"banger/internal/config"
)

// newImagePullCmds returns image pull, export and import.
func newImagePullCmds() []*cobra.Command {
	return []*cobra.Command{newImagePullCmd(), newImageExportCmd(), newImageImportCmd()}
}

func newImagePullCmd() *cobra.Command {
	var req api.PullImageRequest
	var sizeFlag string
	cmd := &cobra.Command{
		Use:   "pull NAME|OCI-REF [--name N] [--kernel-ref K] [--size S] [--refresh]",
		Short: "Make an image from the catalog or an OCI registry",
		Long: `Make an image from a catalog name (` + strings.Join(catalog.Names(), ", ") + `) or an OCI
reference such as docker.io/library/alpine:3.20 or localhost:5000/team/dev:1.

OCI images: the linux/amd64 image is pulled with your registry credentials
(~/.docker/config.json), layers are cached under ~/.cache/banger/oci,
flattened, banger's agent is added (with a systemd unit, or an inittab
line for busybox/sysvinit init; images without init run the agent as
PID 1), and an ext4 root filesystem is built. Images without sshd get a
first-boot service that installs openssh-server when the guest has
network. Registries on localhost/127.0.0.1 may use plain http.

Catalog images are built from their source (debian-bookworm: debootstrap
from the Debian mirror, config debian_mirror) and cached: pulling again is
a no-op unless --refresh.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Ref = args[0]
			if sizeFlag != "" {
				n, err := config.ParseSize(sizeFlag)
				if err != nil {
					return fmt.Errorf("--size: %w", err)
				}
				req.SizeBytes = n
			}
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			p := newProgress()
			im, err := c.PullImage(cmd.Context(), req, p.Event)
			p.Done()
			if err != nil {
				return err
			}
			cmd.Printf("%s ready (%s, %s, sshd: %t, kernel %s)\n", im.Name, dash(im.Distro), size(im.SizeBytes), im.HasSSHD, im.KernelRef)
			return nil
		},
	}
	cmd.Flags().StringVar(&req.Name, "name", "", "image name (default: from the reference, e.g. alpine-3.20)")
	cmd.Flags().StringVar(&req.KernelRef, "kernel-ref", "", "kernel the image boots (default generic-6.1)")
	cmd.Flags().StringVar(&sizeFlag, "size", "", "ext4 size, e.g. 4G (default: content plus headroom)"+sizeHelp)
	cmd.Flags().BoolVar(&req.Refresh, "refresh", false, "rebuild even if the image exists")
	return cmd
}

func newImageExportCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "export NAME -o FILE.tar.zst",
		Short: "Write an image as a bundle (tar.zst of rootfs.ext4 and manifest.json)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return fmt.Errorf("-o is required")
			}
			abs, err := filepath.Abs(out)
			if err != nil {
				return err
			}
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			p := newProgress()
			res, err := c.ExportImage(cmd.Context(), api.ExportImageRequest{Name: args[0], Output: abs}, p.Event)
			p.Done()
			if err != nil {
				return err
			}
			cmd.Printf("%s  %s\n", res.SHA256, res.Path)
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "bundle file to write")
	return cmd
}

func newImageImportCmd() *cobra.Command {
	var req api.ImportImageRequest
	cmd := &cobra.Command{
		Use:   "import FILE.tar.zst|URL [--name N] [--sha256 S]",
		Short: "Add an image from a bundle file or URL, checking its sha256",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Source = args[0]
			if !strings.HasPrefix(req.Source, "http://") && !strings.HasPrefix(req.Source, "https://") {
				abs, err := absExisting("bundle", req.Source)
				if err != nil {
					return err
				}
				req.Source = abs
			}
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			p := newProgress()
			im, err := c.ImportImage(cmd.Context(), req, p.Event)
			p.Done()
			if err != nil {
				return err
			}
			cmd.Printf("%s imported (%s, sha256 %s)\n", im.Name, dash(im.Distro), strings.TrimPrefix(im.Digest, "sha256:"))
			return nil
		},
	}
	cmd.Flags().StringVar(&req.Name, "name", "", "image name (default: the bundle's)")
	cmd.Flags().StringVar(&req.SHA256, "sha256", "", "expected sha256 of the bundle")
	return cmd
}
