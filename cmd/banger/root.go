package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"banger/internal/client"
	"banger/internal/config"
	"banger/internal/version"
)

const rootLong = `banger gives you a disposable Linux microVM in one command.

Every command talks to the daemon, bangerd, and starts it when it is not
running (through sudo when you are not root). State lives in
/var/lib/banger, ~/.config/banger and ~/.cache/banger, or all under
$BANGER_HOME when it is set.

VMs boot under QEMU's microvm machine (KVM when /dev/kvm is usable,
software emulation otherwise). The Firecracker driver is tested against
Firecracker's API contract but has not booted a VM on our test machines.`

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "banger",
		Short:         "Disposable Linux microVMs in one command",
		Long:          rootLong,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version.String(),
	}
	root.SetOut(os.Stdout)
	root.AddCommand(
		newVersionCmd(),
		newDaemonCmd(),
		newConfigCmd(),
		newDoctorCmd(),
		newVMCmd(),
		newKernelCmd(),
		newImageCmd(),
		newSnapshotCmd(),
		newNetworkCmd(),
	)
	return root
}

func dirs() config.Dirs { return config.DefaultDirs() }

// loadConfig reads config.toml; a command reads it once and passes it on.
func loadConfig() (config.Config, error) {
	cfg, _, err := config.Load(dirs().ConfigFile())
	return cfg, err
}

// userKeys returns the ssh files of the user's config, making the key when
// it is missing.
func userKeys() (client.SSHKeys, error) {
	cfg, err := loadConfig()
	if err != nil {
		return client.SSHKeys{}, err
	}
	return client.UserKeys(cfg, dirs())
}

// stdio is this process's stdin, stdout and stderr.
func stdio() client.Stdio { return client.Stdio{In: os.Stdin, Out: os.Stdout, Err: os.Stderr} }

// guestSignals subscribes to the signals a command in a guest gets
// forwarded (client.CommandOptions.Signals); stop ends that.
func guestSignals() (<-chan os.Signal, func()) {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGWINCH)
	return sigs, func() { signal.Stop(sigs) }
}

// exitStatus turns a guest command's or ssh's status into banger's.
func exitStatus(code int, err error) error {
	if err == nil && code != 0 {
		return &exitError{code: code}
	}
	return err
}

// connect returns a client of a running daemon, starting one if needed.
func connect(ctx context.Context) (*client.Client, error) {
	return client.Ensure(ctx, dirs())
}

// printFields prints name: value lines, aligned: the human-readable form
// of an inspect command.
func printFields(fields [][2]string) error {
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	for _, f := range fields {
		fmt.Fprintf(tw, "%s:\t%s\n", f[0], f[1])
	}
	return tw.Flush()
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newVersionCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the versions of banger and of the running bangerd",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := struct {
				Client string `json:"client"`
				Daemon string `json:"daemon,omitempty"`
				PID    int    `json:"daemon_pid,omitempty"`
			}{Client: version.String()}
			if v, err := client.New(dirs().Socket()).Version(cmd.Context()); err == nil {
				out.Daemon, out.PID = v.Version, v.PID
			}
			if asJSON {
				return printJSON(out)
			}
			cmd.Printf("banger %s\n", out.Client)
			if out.Daemon != "" {
				cmd.Printf("bangerd %s (pid %d)\n", out.Daemon, out.PID)
			} else {
				cmd.Println("bangerd not running")
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
