package main

import (
	"context"
	"os"
	"time"

	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/client"
	"banger/internal/config"
	"banger/internal/doctor"
)

func newDoctorCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Check the host's prerequisites and say how to fix each",
		Long: `Check everything banger needs on this host: /dev/kvm, the VMMs,
e2fsprogs, debootstrap, networking prerequisites, free disk and the daemon.
Each check prints ok, warn or fail, why, and the exact fix. doctor says
which VMM vmm = auto picks and why. It exits non-zero only when something
required for the configured path is missing.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d := dirs()
			cfg, _, err := config.Load(d.ConfigFile())
			if err != nil {
				return err
			}
			rep := doctor.Run(cmd.Context(), doctor.Options{
				Config:   cfg,
				StateDir: d.State,
				DaemonCheck: func(ctx context.Context) error {
					return client.New(d.Socket()).Ping(ctx)
				},
				Web: func(ctx context.Context) (api.WebStatus, error) {
					ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
					defer cancel()
					v, err := client.New(d.Socket()).Version(ctx)
					return v.Web, err
				},
			})
			if asJSON {
				if err := printJSON(rep); err != nil {
					return err
				}
			} else {
				doctor.Render(os.Stdout, rep)
			}
			if !rep.OK() {
				return &exitError{code: 1}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
