package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/client"
)

func newDaemonCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "daemon", Short: "Start, stop or check bangerd"}
	var asJSON bool
	status := &cobra.Command{
		Use:   "status",
		Short: "Say whether bangerd runs, and its version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v, err := client.New(dirs().Socket()).Version(cmd.Context())
			if err != nil {
				return fmt.Errorf("bangerd is not running on %s", dirs().Socket())
			}
			if asJSON {
				return printJSON(v)
			}
			cmd.Printf("bangerd %s running (pid %d) since %s, state in %s\n", v.Version, v.PID, v.StartedAt.Format(time.RFC3339), v.StateDir)
			cmd.Println(webLine(v.Web))
			return nil
		},
	}
	status.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	start := &cobra.Command{
		Use:   "start",
		Short: "Start bangerd if it is not running",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			v, err := c.Version(cmd.Context())
			if err != nil {
				return err
			}
			cmd.Printf("bangerd %s running (pid %d)\n", v.Version, v.PID)
			return nil
		},
	}
	stop := &cobra.Command{
		Use:   "stop",
		Short: "Stop bangerd; running VMs keep running and are re-adopted",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return stopDaemon(cmd)
		},
	}
	restart := &cobra.Command{
		Use:   "restart",
		Short: "Restart bangerd (e.g. after an upgrade); VMs keep running",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := stopDaemon(cmd); err != nil {
				return err
			}
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			v, err := c.Version(cmd.Context())
			if err == nil {
				cmd.Printf("bangerd %s running (pid %d)\n", v.Version, v.PID)
			}
			return err
		},
	}
	cmd.AddCommand(status, start, stop, restart)
	return cmd
}

// webLine says where the web UI is, or why it is not served.
func webLine(w api.WebStatus) string {
	switch {
	case w.Addr == "":
		return `web ui: disabled (web_listen_addr = "")`
	case w.Error != "":
		return fmt.Sprintf("web ui: not served on %s: %s (see banger doctor)", w.Addr, w.Error)
	default:
		return "web ui: " + w.URL
	}
}

func stopDaemon(cmd *cobra.Command) error {
	running, err := client.New(dirs().Socket()).Stop(cmd.Context())
	switch {
	case err != nil:
		return err
	case running:
		cmd.Println("bangerd stopped")
	default:
		cmd.Println("bangerd is not running")
	}
	return nil
}
