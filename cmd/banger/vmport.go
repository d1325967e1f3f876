package main

import (
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"banger/internal/api"
)

// publishHelp is the help of -p on vm create and vm run.
const publishHelp = "forward a host port to a guest port, " + api.PortSyntax +
	" (repeatable); HOST_ADDR defaults to 127.0.0.1, give 0.0.0.0 to listen on every interface"

// publishFlag adds -p/--publish, the forwards a new VM gets.
func publishFlag(cmd *cobra.Command, ports *[]string) {
	cmd.Flags().StringArrayVarP(ports, "publish", "p", nil, publishHelp)
}

// checkPublish refuses a malformed -p before anything is sent.
func checkPublish(specs []string) error {
	for _, s := range specs {
		if _, err := api.ParsePortForward(s); err != nil {
			return err
		}
	}
	return nil
}

func newVMPortCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "port",
		Short: "Forward host ports to a VM's ports",
		Long: `Port forwards make a server in the guest reachable from the host:
bangerd listens on HOST_ADDR:HOST_PORT and forwards each TCP connection (or
UDP datagram) to the guest's GUEST_PORT. HOST_ADDR defaults to 127.0.0.1, so
only this host reaches it; 0.0.0.0 opens it to every interface.

A VM keeps its forwards while it is stopped; they listen while it runs, and
again after a restart of the VM or of bangerd. See docs/networking.md.`,
	}
	cmd.AddCommand(newVMPortAddCmd(), newVMPortListCmd(), newVMPortRmCmd())
	return cmd
}

func newVMPortAddCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "add VM SPEC...",
		Short: "Add port forwards, " + api.PortSyntax + " (all or none)",
		Example: "  banger vm port add dev 8080:80\n  banger vm port add dev 127.0.0.1:5432:5432 0.0.0.0:5353:53/udp\n" +
			"  banger vm port add dev '[::1]:8080:80'",
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			ps, err := c.AddPorts(cmd.Context(), args[0], args[1:])
			if err != nil {
				return err
			}
			return printPorts(ps, asJSON)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the VM's forwards as JSON")
	return cmd
}

func newVMPortListCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use: "list VM [--json]", Aliases: []string{"ls"}, Short: "List a VM's port forwards", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			ps, err := c.Ports(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return printPorts(ps, asJSON)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newVMPortRmCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "rm VM SPEC...",
		Aliases: []string{"remove"},
		Short:   "Remove port forwards (all or none), named [HOST_ADDR:]HOST_PORT[/tcp|/udp] or by their add spec",
		Example: "  banger vm port rm dev 8080\n  banger vm port rm dev 0.0.0.0:5353/udp",
		Args:    cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			ps, err := c.RemovePorts(cmd.Context(), args[0], args[1:])
			if err != nil {
				return err
			}
			return printPorts(ps, asJSON)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the forwards left as JSON")
	return cmd
}

// printPorts prints forwards as a table, or JSON.
func printPorts(ps []api.PortForward, asJSON bool) error {
	if asJSON {
		return printJSON(ps)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tGUEST\tPROTO\tSTATE")
	for _, p := range ps {
		state := "not listening"
		if p.Active {
			state = "listening"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", p.Host(), p.GuestPort, p.Proto, state)
	}
	return tw.Flush()
}
