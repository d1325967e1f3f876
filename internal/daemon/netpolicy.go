package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"banger/internal/api"
	"banger/internal/network"
	"banger/internal/store"
)

// The network service's part in egress policies: the guest DNS server
// and the policies of running VMs (egressService does the work).

// startDNS starts the guest DNS server on the bridge address, port 53
// (UDP and TCP), once the bridge has it. When the port is taken, guests
// are given the host's resolvers instead (dnsErr says so), and allow=
// policies reach only the addresses their names resolved to on the host.
func (ns *netService) startDNS() {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	ns.startDNSLocked()
}

func (ns *netService) startDNSLocked() {
	if ns.dnsUp {
		return
	}
	addr := net.JoinHostPort(ns.mgr.Config().BridgeIP.String(), "53")
	pc, err := net.ListenPacket("udp", addr)
	if err == nil {
		var ln net.Listener
		if ln, err = net.Listen("tcp", addr); err == nil {
			ns.guestDNS.Serve(pc, ln)
			ns.dnsUp, ns.dnsErr = true, ""
			ns.log.Info("guest dns server listening", "addr", addr, "upstreams", ns.guestDNS.Upstreams)
			return
		}
		pc.Close()
	}
	ns.dnsErr = fmt.Sprintf("guest dns server cannot listen on %s: %v; guests are given the host's resolvers %v instead, "+
		"and allow= policies do not follow the guest's own lookups", addr, err, ns.dns)
	ns.log.Warn("guest dns server not started", "why", ns.dnsErr)
}

// guestResolvers are the resolvers guests are told to use: the guest
// DNS server on the bridge address when it listens.
func (ns *netService) guestResolvers() []netip.Addr {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if ns.dnsUp {
		return []netip.Addr{ns.mgr.Config().BridgeIP}
	}
	return ns.dns
}

// restorePolicies rebuilds the rules of the running VMs from the state
// and removes those of any other VM.
func (ns *netService) restorePolicies(ctx context.Context, running map[string]bool) error {
	have, err := ns.mgr.GuestIDs(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for id := range running {
		if l, err := ns.store.LeaseOf(ctx, id); err == nil && l.Tap != "" {
			errs = append(errs, ns.applyPolicy(ctx, id, nil))
			delete(have, id)
		}
	}
	for id := range have {
		ns.log.Info("removing rules of a vm that is not running", "vm", id)
		errs = append(errs, ns.mgr.RemoveGuest(ctx, id))
	}
	return errors.Join(errs...)
}

// checkPolicy refuses a policy whose host names do not resolve.
func (ns *netService) checkPolicy(ctx context.Context, p api.NetPolicy) error {
	return ns.egress.check(ctx, p)
}

// applyPolicy puts p (nil: the VM's stored policy) in force for the VM
// with id, which has a tap. Tracked connections the VM opened are
// dropped, so a tightened policy ends them too.
func (ns *netService) applyPolicy(ctx context.Context, id string, p *api.NetPolicy) error {
	v, err := ns.store.VMByName(ctx, id)
	if err != nil {
		return err
	}
	l, err := ns.store.LeaseOf(ctx, id)
	if err != nil {
		return err
	}
	if l.Tap == "" {
		return fmt.Errorf("vm %s has no tap", v.Name)
	}
	mac, err := net.ParseMAC(l.MAC)
	if err != nil {
		return fmt.Errorf("vm %s: mac %q: %w", v.Name, l.MAC, err)
	}
	pol := policyOf(v)
	if p != nil {
		pol = *p
	}
	g := network.Guest{VMID: id, Tap: l.Tap, IP: l.IP, MAC: mac}
	if _, err := ns.egress.apply(ctx, g, pol); err != nil {
		return fmt.Errorf("vm %s network policy: %w", v.Name, err)
	}
	if p != nil {
		if n, err := ns.mgr.ForgetConnections(l.IP); err != nil {
			ns.log.Warn("dropping tracked connections", "vm", v.Name, "err", err)
		} else if n > 0 {
			ns.log.Info("dropped tracked connections after a policy change", "vm", v.Name, "count", n)
		}
	}
	return nil
}

// resolved is what the running VM's allowed host names resolve to now.
func (ns *netService) resolved(id string) map[string][]string { return ns.egress.resolved(id) }

// policyOf is v's stored policy; a record that does not parse is the
// most restrictive policy, never the default.
func policyOf(v store.VM) api.NetPolicy {
	var p api.NetPolicy
	if v.Net == "" || v.Net == "{}" {
		return p
	}
	if err := json.Unmarshal([]byte(v.Net), &p); err != nil {
		return api.NetPolicy{Mode: api.NetNone, Isolate: true}
	}
	return p
}
