package main

import (
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"banger/internal/api"
)

// netHelp is the long help of --net, shared by vm create, vm run and vm net.
const netHelp = `egress policy: nat (default), none, or allow=DEST[,DEST...] with DEST a HOST,
IP or CIDR, each with an optional :PORT (see docs/networking.md)`

// netFlags adds --net and --isolate to a command that creates a VM.
func netFlags(cmd *cobra.Command, req *api.CreateVMRequest) {
	cmd.Flags().StringVar(&req.Net, "net", "", netHelp)
	cmd.Flags().BoolVar(&req.Isolate, "isolate", false, "cut the VM off from the other VMs on the bridge")
}

// checkNet reports a malformed --net before anything is asked of the
// daemon (which checks it again, and resolves its host names).
func checkNet(s string) error {
	_, err := api.ParseNet(s)
	return err
}

func newVMNetCmd() *cobra.Command {
	var policy string
	var isolate, noIsolate, asJSON bool
	cmd := &cobra.Command{
		Use:   "net VM [--net POLICY] [--isolate | --no-isolate]",
		Short: "Show or change a VM's egress policy and isolation",
		Long: `Show or change what a VM may reach, enforced on the host in banger's
nftables tables (root in the guest cannot lift it):

  --net nat                 whatever the host reaches (the default), except
                            169.254.0.0/16 (cloud metadata)
  --net none                nothing beyond the bridge, not even other VMs;
                            the VM keeps its NIC, so banger vm ssh still works
  --net allow=DEST,...      only these destinations: HOST names (resolved on
                            the host, refreshed as their DNS answers expire;
                            the guest's DNS answers only them), IPs or CIDRs,
                            each with an optional :PORT (TCP and UDP)
  --isolate, --no-isolate   cut the VM off from the other VMs, or not

A running VM gets the change at once (connections it opened are cut); a
stopped one at its next start. Without flags, prints the policy in force.
See docs/networking.md.`,
		Example: `  banger vm net dev --net allow=github.com,proxy.golang.org:443
  banger vm net dev --net none --isolate
  banger vm net dev --net nat --no-isolate`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if isolate && noIsolate {
				return fmt.Errorf("--isolate and --no-isolate contradict each other; give one")
			}
			if policy != "" {
				if err := checkNet(policy); err != nil {
					return err
				}
			}
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			req := api.SetNetRequest{Net: policy}
			if isolate || noIsolate {
				req.Isolate = &isolate
			}
			var vm api.VM
			if policy == "" && req.Isolate == nil {
				vm, err = c.VM(cmd.Context(), args[0])
			} else {
				vm, err = c.SetNet(cmd.Context(), args[0], req)
			}
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(vm.Net)
			}
			cmd.Print(describeNet(vm))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&policy, "net", "", netHelp)
	f.BoolVar(&isolate, "isolate", false, "cut the VM off from the other VMs on the bridge")
	f.BoolVar(&noIsolate, "no-isolate", false, "let the VM reach the other VMs again")
	f.BoolVar(&asJSON, "json", false, "print the policy as JSON")
	return cmd
}

// describeNet is a VM's policy for people: the policy, then what each
// allowed host name resolves to.
func describeNet(vm api.VM) string {
	var b strings.Builder
	state := ""
	if vm.State != api.StateRunning {
		state = fmt.Sprintf(" (vm is %s: in force from its next start)", vm.State)
	}
	fmt.Fprintf(&b, "%s: --net %s%s\n", vm.Name, vm.Net, state)
	names := make([]string, 0, len(vm.Net.Resolved))
	for n := range vm.Net.Resolved {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		addrs := strings.Join(vm.Net.Resolved[n], ", ")
		if addrs == "" {
			addrs = "(does not resolve now: allows nothing)"
		}
		fmt.Fprintf(&b, "  %s -> %s\n", n, addrs)
	}
	return b.String()
}
