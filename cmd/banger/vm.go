package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/client"
	"banger/internal/config"
)

func newVMCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "vm", Short: "Create, run and manage VMs"}
	cmd.AddCommand(newVMCreateCmd(), newVMStartCmd(), newVMStopCmd(), newVMDeleteCmd(),
		newVMListCmd(), newVMInspectCmd(), newVMLogsCmd(), newVMExecCmd(), newVMCpCmd(), newVMSessionCmd(), newVMACPCmd(), newVMNetCmd(), newVMPortCmd())
	cmd.AddCommand(newVMRunCmds()...)
	cmd.AddCommand(newVMSnapshotCmds()...)
	return cmd
}

func newVMCreateCmd() *cobra.Command {
	var req api.CreateVMRequest
	var memory, disk string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create a VM from an image and start it",
		Long: `Create a VM from an image: it gets its own writable disk over the image's
root filesystem (under qemu a qcow2 layer, nothing copied; under firecracker
a reflink or copy), and boots unless --no-start is given. The command returns
once the guest agent answers (bounded by --ready-timeout). With
--from-snapshot it starts from a snapshot's memory instead (banger vm
snapshot), with its own identity.

The root disk is --disk (default vm_disk in config.toml, 16G), thin on the
host; / in the guest fills it (grown online at boot where the filesystem
allows, else by resize2fs here). See docs/disks.md.

-p forwards a host port to a guest port (banger vm port; docs/networking.md).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := parseSizes(&req, memory, disk); err != nil {
				return err
			}
			if err := checkPublish(req.Ports); err != nil {
				return err
			}
			if err := checkNet(req.Net); err != nil {
				return err
			}
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			p := newProgress()
			vm, err := c.CreateVM(cmd.Context(), req, p.Event)
			p.Done()
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(vm)
			}
			cmd.Printf("%s %s\n", vm.Name, vm.State)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Image, "image", "", "image to boot (see banger image list)")
	f.StringVar(&req.FromSnapshot, "from-snapshot", "", "start from this snapshot's memory and disk instead of booting (banger snapshot list)")
	f.StringVar(&req.Name, "name", "", "VM name (default: a generated one)")
	f.StringVar(&req.Kernel, "kernel", "", "kernel bundle, overriding the image's")
	sizeFlags(cmd, &req, &memory, &disk)
	f.BoolVar(&req.NoStart, "no-start", false, "create the VM but do not boot it")
	f.BoolVar(&req.Cold, "cold", false, "boot the kernel even when the image has a warm snapshot (warm_start)")
	netFlags(cmd, &req)
	publishFlag(cmd, &req.Ports)
	f.IntVar(&req.ReadyTimeoutSeconds, "ready-timeout", 90, "seconds to wait for the guest agent")
	f.BoolVar(&asJSON, "json", false, "print the VM as JSON")
	return cmd
}

// sizeFlags adds --cpus, --memory and --disk, whose defaults the daemon
// fills in from config.toml.
func sizeFlags(cmd *cobra.Command, req *api.CreateVMRequest, memory, disk *string) {
	f := cmd.Flags()
	f.IntVar(&req.VCPUs, "cpus", 0, "vCPUs (default: vm_cpus in config.toml, 2)")
	f.StringVar(memory, "memory", "", "memory, e.g. 512M or 2G (default: vm_memory in config.toml, 1G)"+sizeHelp)
	f.StringVar(disk, "disk", "", "root disk, at least the image's size (default: vm_disk in config.toml, 16G); "+
		"a sparse file costing only what the guest writes, and / in the guest fills it"+sizeHelp)
}

// parseSizes reads --memory and --disk into req; "" leaves the daemon's
// default.
func parseSizes(req *api.CreateVMRequest, memory, disk string) error {
	var err error
	if memory != "" {
		if req.MemoryMiB, err = parseMiB("--memory", memory); err != nil {
			return err
		}
	}
	if disk != "" {
		if req.DiskBytes, err = config.ParseSize(disk); err != nil {
			return fmt.Errorf("--disk: %w", err)
		}
	}
	return nil
}

// parseMiB reads a size flag (config.ParseSize) as whole MiB.
func parseMiB(flag, s string) (int, error) {
	n, err := config.ParseSize(s)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", flag, err)
	}
	if n < 1<<20 {
		return 0, fmt.Errorf("%s: %q is less than 1 MiB", flag, s)
	}
	return int(n >> 20), nil
}

// sizeHelp is said in each size flag's help.
const sizeHelp = "; " + config.SizeRule

func newVMStartCmd() *cobra.Command {
	var timeout int
	cmd := &cobra.Command{
		Use:   "start VM",
		Short: "Boot a stopped VM and wait for its agent",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			p := newProgress()
			vm, err := c.StartVM(cmd.Context(), args[0], api.StartVMRequest{ReadyTimeoutSeconds: timeout}, p.Event)
			p.Done()
			if err != nil {
				return err
			}
			cmd.Printf("%s %s\n", vm.Name, vm.State)
			return nil
		},
	}
	cmd.Flags().IntVar(&timeout, "ready-timeout", 90, "seconds to wait for the guest agent")
	return cmd
}

func newVMStopCmd() *cobra.Command {
	var req api.StopVMRequest
	cmd := &cobra.Command{
		Use:   "stop VM",
		Short: "Stop a VM: power off gracefully, then kill after the timeout",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			vm, err := c.StopVM(cmd.Context(), args[0], req)
			if err != nil {
				return err
			}
			cmd.Printf("%s %s\n", vm.Name, vm.State)
			return nil
		},
	}
	cmd.Flags().BoolVar(&req.Force, "force", false, "kill the VMM at once")
	cmd.Flags().IntVar(&req.TimeoutSeconds, "timeout", 20, "seconds to wait for a graceful power-off")
	return cmd
}

func newVMDeleteCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "delete VM...",
		Short: "Delete VMs, stopping them first if they run",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			for _, name := range args {
				if err := c.DeleteVM(cmd.Context(), name, force); err != nil {
					return err
				}
				cmd.Printf("%s deleted\n", name)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "skip the graceful stop")
	return cmd
}

func newVMListCmd() *cobra.Command {
	return newListCmd("List VMs", (*client.Client).ListVMs, "NAME\tSTATE\tIP\tIMAGE\tVMM\tVCPUS\tMEMORY\tAGE",
		func(v api.VM) string {
			return fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%d\t%dM\t%s", v.Name, v.State, dash(v.IP), v.Image,
				v.VMM, v.VCPUs, v.MemoryMiB, age(v.CreatedAt))
		})
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func age(t time.Time) string {
	d := time.Since(t).Round(time.Second)
	switch {
	case d < time.Minute:
		return d.String()
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

func newVMInspectCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "inspect VM",
		Short: "Show everything about a VM as JSON",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			vm, err := c.VM(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return printJSON(vm)
		},
	}
	cmd.Flags().Bool("json", true, "print JSON (the only format)")
	return cmd
}

func newVMLogsCmd() *cobra.Command {
	var follow bool
	cmd := &cobra.Command{
		Use:   "logs VM",
		Short: "Print a VM's serial console log",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			rc, err := c.Logs(cmd.Context(), args[0], follow)
			if err != nil {
				return err
			}
			defer rc.Close()
			_, err = io.Copy(os.Stdout, rc)
			if cmd.Context().Err() != nil {
				return nil
			}
			return err
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new output")
	return cmd
}
