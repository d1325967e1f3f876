package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/client"
)

func newKernelCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "kernel", Short: "Manage kernel bundles (kernel, initrd and modules)"}
	cmd.AddCommand(newKernelListCmd(), newKernelPullCmd(), newKernelImportCmd(), newKernelRegisterCmd(), newKernelDeleteCmd(),
		newKernelInspectCmd())
	return cmd
}

func newKernelListCmd() *cobra.Command {
	return newListCmd("List kernel bundles", (*client.Client).ListKernels, "NAME\tRELEASE\tSOURCE\tAGE",
		func(k api.Kernel) string {
			return fmt.Sprintf("%s\t%s\t%s\t%s", k.Name, dash(k.Release), k.Source, age(k.CreatedAt))
		})
}

func newKernelInspectCmd() *cobra.Command {
	return newInspectCmd("Show a kernel bundle", (*client.Client).Kernel, func(k api.Kernel) [][2]string {
		return [][2]string{
			{"name", k.Name}, {"release", dash(k.Release)}, {"kernel", k.Kernel}, {"initrd", dash(k.Initrd)},
			{"modules", dash(k.Modules)}, {"source", k.Source}, {"sha256", dash(k.SHA256)},
			{"created", created(k.CreatedAt)},
		}
	})
}

func newKernelPullCmd() *cobra.Command {
	var req api.PullKernelRequest
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "pull NAME",
		Short: "Build a catalog kernel (generic-6.1) from the Debian archive",
		Long: `Build a catalog kernel from Debian's archive: the package is fetched from
the configured mirror (debian_mirror, else the host's apt sources, else
deb.debian.org) and verified: the InRelease signature against the Debian
archive keyring, the Packages index hash, then the package's sha256.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Name = args[0]
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			p := newProgress()
			k, err := c.PullKernel(cmd.Context(), req, p.Event)
			p.Done()
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(k)
			}
			cmd.Printf("%s %s\n", k.Name, k.Release)
			return nil
		},
	}
	cmd.Flags().StringVar(&req.Mirror, "mirror", "", "Debian mirror URL (default: debian_mirror from config)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newKernelImportCmd() *cobra.Command {
	var req api.ImportKernelRequest
	cmd := &cobra.Command{
		Use:   "import --deb FILE [--name N]",
		Short: "Build a kernel bundle from a local Debian linux-image .deb",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if req.Deb == "" {
				return fmt.Errorf("--deb is required")
			}
			abs, err := filepath.Abs(req.Deb)
			if err != nil {
				return err
			}
			if _, err := os.Stat(abs); err != nil {
				return fmt.Errorf("--deb: %w", err)
			}
			req.Deb = abs
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			p := newProgress()
			k, err := c.ImportKernel(cmd.Context(), req, p.Event)
			p.Done()
			if err != nil {
				return err
			}
			cmd.Printf("%s %s\n", k.Name, k.Release)
			return nil
		},
	}
	cmd.Flags().StringVar(&req.Deb, "deb", "", "the linux-image .deb file")
	cmd.Flags().StringVar(&req.Name, "name", "", "bundle name (default: from the package)")
	return cmd
}

func newKernelRegisterCmd() *cobra.Command {
	var req api.RegisterKernelRequest
	cmd := &cobra.Command{
		Use:   "register --name N --kernel FILE [--initrd FILE]",
		Short: "Adopt a plain vmlinux or bzImage, with an optional initrd",
		Long: `Adopt a kernel image you built. The files are copied into the store.
Without an initrd the kernel must have virtio-mmio, virtio-blk and ext4
built in, and the root filesystem must bring its own agent start-up.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if req.Kernel, err = absExisting("--kernel", req.Kernel); err != nil {
				return err
			}
			if req.Initrd != "" {
				if req.Initrd, err = absExisting("--initrd", req.Initrd); err != nil {
					return err
				}
			}
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			k, err := c.RegisterKernel(cmd.Context(), req)
			if err != nil {
				return err
			}
			cmd.Printf("%s registered\n", k.Name)
			return nil
		},
	}
	cmd.Flags().StringVar(&req.Name, "name", "", "bundle name")
	cmd.Flags().StringVar(&req.Kernel, "kernel", "", "vmlinux or bzImage")
	cmd.Flags().StringVar(&req.Initrd, "initrd", "", "initrd (optional)")
	return cmd
}

func absExisting(flag, p string) (string, error) {
	if p == "" {
		return "", fmt.Errorf("%s is required", flag)
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(abs); err != nil {
		return "", fmt.Errorf("%s: %w", flag, err)
	}
	return abs, nil
}

func newKernelDeleteCmd() *cobra.Command {
	return newDeleteCmd("Delete a kernel bundle no VM uses", (*client.Client).DeleteKernel)
}
