package main

import (
	"encoding/json"
	"net/http"
	"strings"

	"github.com/spf13/cobra"
)

func newNetworkCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "network", Short: "Inspect banger's host network (bridge, leases, NAT)"}
	var asJSON bool
	inspect := &cobra.Command{
		Use:   "inspect",
		Short: "Show the bridge, cidr, address leases, taps, the guest DNS server and banger's nftables rules",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			var raw json.RawMessage
			if err := c.Do(cmd.Context(), http.MethodGet, "/v1/network", nil, &raw); err != nil {
				return err
			}
			if asJSON {
				return printJSON(raw)
			}
			var v struct {
				Bridge struct {
					Name, State string
					IP, CIDR    string
					Exists      bool
				}
				Forwarding bool     `json:"ip_forward"`
				NATRules   []string `json:"nat_rules"`
				Warnings   []string
				Leases     []struct{ IP, VM, MAC, Tap string }
				Conflict   string
				NotOwner   string `json:"not_owner"`
				GuestDNS   struct {
					Listen, Problem string
					Upstreams       []string
				} `json:"guest_dns"`
			}
			json.Unmarshal(raw, &v)
			cmd.Printf("bridge %s (%s) ip %s cidr %s, exists: %t\n", v.Bridge.Name, dash(v.Bridge.State), v.Bridge.IP, v.Bridge.CIDR, v.Bridge.Exists)
			cmd.Printf("ip forwarding: %t\n", v.Forwarding)
			for _, l := range v.Leases {
				cmd.Printf("lease %s -> %s (mac %s, tap %s)\n", l.IP, l.VM, l.MAC, dash(l.Tap))
			}
			for _, r := range v.NATRules {
				cmd.Printf("rule: %s\n", r)
			}
			if v.GuestDNS.Listen != "" {
				cmd.Printf("guest dns: %s -> %s\n", v.GuestDNS.Listen, strings.Join(v.GuestDNS.Upstreams, ", "))
			}
			if v.GuestDNS.Problem != "" {
				cmd.Printf("warning: %s\n", v.GuestDNS.Problem)
			}
			for _, w := range v.Warnings {
				cmd.Printf("warning: %s\n", w)
			}
			if v.NotOwner != "" {
				cmd.Printf("network not managed by this daemon: %s\n", v.NotOwner)
			}
			if v.Conflict != "" {
				cmd.Printf("config not in force: %s\n", v.Conflict)
			}
			return nil
		},
	}
	inspect.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.AddCommand(inspect)
	return cmd
}
