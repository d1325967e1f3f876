package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/client"
	"banger/internal/config"
)

// newVMSnapshotCmds are vm pause, resume, snapshot and fork.
func newVMSnapshotCmds() []*cobra.Command {
	return []*cobra.Command{
		newVMPauseCmd("pause", "Stop a running VM's vCPUs (the VMM keeps it in memory)", (*client.Client).PauseVM),
		newVMPauseCmd("resume", "Let a paused VM run on", (*client.Client).ResumeVM),
		newVMSnapshotCmd(), newVMForkCmd(),
	}
}

func newVMPauseCmd(use, short string, call func(*client.Client, context.Context, string) (api.VM, error)) *cobra.Command {
	return &cobra.Command{
		Use: use + " VM", Short: short, Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			vm, err := call(c, cmd.Context(), args[0])
			if err != nil {
				return err
			}
			cmd.Printf("%s %s\n", vm.Name, vm.State)
			return nil
		},
	}
}

func newVMSnapshotCmd() *cobra.Command {
	var req api.SnapshotVMRequest
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "snapshot VM",
		Short: "Snapshot a running VM: its memory and its disk, at one moment",
		Long: `Snapshot a running VM: it is paused, the VMM writes its memory and device
state, its disk is frozen (the VM goes on writing a new layer over it) and it
runs on. banger vm create --from-snapshot S makes VMs that start where it
stopped, with their own identity. Stopped VMs cannot be snapshotted (a
snapshot holds memory): start them first. Needs the qemu vmm.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			sn, err := c.SnapshotVM(cmd.Context(), args[0], req)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(sn)
			}
			cmd.Printf("%s %s\n", sn.Name, sn.State)
			return nil
		},
	}
	cmd.Flags().StringVar(&req.Name, "name", "", "snapshot name (default VM-YYYYMMDD-HHMMSS)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the snapshot as JSON")
	return cmd
}

func newVMForkCmd() *cobra.Command {
	var req api.ForkVMRequest
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "fork VM --name N",
		Short: "Make a new VM from a snapshot of a running one; the source runs on",
		Long: `Fork a running VM: snapshot it (kept as N-origin, which the new VM's disk
builds on) and create N from the snapshot, with its own MAC, address,
hostname, machine-id, SSH host key and agent key.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			p := newProgress()
			vm, err := c.ForkVM(cmd.Context(), args[0], req, p.Event)
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
	cmd.Flags().StringVar(&req.Name, "name", "", "the new VM's name (required)")
	cmd.Flags().IntVar(&req.ReadyTimeoutSeconds, "ready-timeout", 90, "seconds to wait for the new VM's agent")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the new VM as JSON")
	return cmd
}

func newSnapshotCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "snapshot", Short: "List, inspect and delete VM snapshots"}
	cmd.AddCommand(
		newListCmd("List snapshots", (*client.Client).ListSnapshots, "NAME\tKIND\tSTATE\tSOURCE\tIMAGE\tVMM\tSIZE\tUSED BY\tAGE",
			func(s api.Snapshot) string {
				return fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s", s.Name, s.Kind, s.State, s.SourceVM, s.Image, s.VMM,
					config.FormatSize(s.Bytes), dash(strings.Join(s.UsedBy, ",")), age(s.CreatedAt))
			}),
		newInspectCmd("Show a snapshot", (*client.Client).Snapshot, func(s api.Snapshot) [][2]string {
			return [][2]string{
				{"name", s.Name}, {"state", s.State}, {"kind", s.Kind}, {"source vm", s.SourceVM},
				{"image", s.Image}, {"kernel", s.Kernel}, {"vmm", s.VMM + " " + s.VMMVersion},
				{"vcpus", strconv.Itoa(s.VCPUs)}, {"memory", strconv.Itoa(s.MemoryMiB) + "M"},
				{"disk", config.FormatSize(s.DiskBytes) + " (" + s.Disk + ")"}, {"size on disk", config.FormatSize(s.Bytes)},
				{"used by", dash(strings.Join(s.UsedBy, ", "))}, {"dir", s.Dir}, {"created", s.CreatedAt.Format("2006-01-02 15:04:05")},
			}
		}),
		newDeleteCmd("Delete a snapshot no VM or snapshot depends on", (*client.Client).DeleteSnapshot),
	)
	return cmd
}
