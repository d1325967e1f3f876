package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/client"
)

func newImageCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "image", Short: "Manage images (root filesystems)"}
	cmd.AddCommand(newImageRegisterCmd(), newImageListCmd(), newImageInspectCmd(), newImageDeleteCmd())
	cmd.AddCommand(newImagePullCmds()...)
	cmd.AddCommand(newImageWarmCmd())
	return cmd
}

func newImageRegisterCmd() *cobra.Command {
	var req api.RegisterImageRequest
	cmd := &cobra.Command{
		Use:   "register --name N --rootfs /abs/rootfs.ext4 --kernel-ref K",
		Short: "Adopt an existing ext4 root filesystem as an image",
		Long: `Adopt an existing ext4 root filesystem. The file is copied into banger's
image store (your file is never changed), and banger's pieces are
injected into the copy: the guest agent at /usr/lib/banger/banger-agent
and, when the rootfs has systemd, a banger-agent.service that starts it.
A rootfs without an init system boots with the agent as PID 1.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if req.Name == "" {
				return fmt.Errorf("--name is required")
			}
			if req.Rootfs, err = absExisting("--rootfs", req.Rootfs); err != nil {
				return err
			}
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			p := newProgress()
			im, err := c.RegisterImage(cmd.Context(), req, p.Event)
			p.Done()
			if err != nil {
				return err
			}
			cmd.Printf("%s registered (%s, sshd: %t)\n", im.Name, dash(im.Distro), im.HasSSHD)
			return nil
		},
	}
	cmd.Flags().StringVar(&req.Name, "name", "", "image name")
	cmd.Flags().StringVar(&req.Rootfs, "rootfs", "", "absolute path of an ext4 root filesystem")
	cmd.Flags().StringVar(&req.KernelRef, "kernel-ref", "", "kernel bundle the image boots (see banger kernel list)")
	return cmd
}

func newImageListCmd() *cobra.Command {
	return newListCmd("List images", (*client.Client).ListImages, "NAME\tDISTRO\tKERNEL\tSIZE\tSSHD\tAGE",
		func(im api.Image) string {
			return fmt.Sprintf("%s\t%s\t%s\t%s\t%t\t%s", im.Name, dash(im.Distro), im.KernelRef, size(im.SizeBytes), im.HasSSHD, age(im.CreatedAt))
		})
}

func newImageInspectCmd() *cobra.Command {
	return newInspectCmd("Show an image", (*client.Client).Image, func(im api.Image) [][2]string {
		return [][2]string{
			{"name", im.Name}, {"source", im.Source}, {"digest", dash(im.Digest)}, {"rootfs", im.Rootfs},
			{"size", size(im.SizeBytes)}, {"kernel", im.KernelRef}, {"distro", dash(im.Distro)},
			{"sshd", fmt.Sprint(im.HasSSHD)}, {"agent injected", fmt.Sprint(im.Injected)},
			{"created", created(im.CreatedAt)},
		}
	})
}

func newImageDeleteCmd() *cobra.Command {
	return newDeleteCmd("Delete an image no VM uses", (*client.Client).DeleteImage)
}

func newImageWarmCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "warm IMAGE",
		Short: "Make the image's warm snapshot now, so the next vm run of it restores instead of booting",
		Long: `Boot a temporary VM of IMAGE (default sizes from config.toml), snapshot it
as soon as its agent (and sshd) answer, and delete the VM; the snapshot (kind
warm) stays. vm create and vm run of the image with those sizes then restore
it instead of booting cold. Without this, the first cold boot of an image
makes it. Warm snapshots are deleted with their image.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			p := newProgress()
			sn, err := c.WarmImage(cmd.Context(), args[0], p.Event)
			p.Done()
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(sn)
			}
			cmd.Printf("%s: warm snapshot %s (%s %s, %d vcpus, %d MiB)\n", args[0], sn.Name, sn.VMM, sn.VMMVersion, sn.VCPUs, sn.MemoryMiB)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the snapshot as JSON")
	return cmd
}
