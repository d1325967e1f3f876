// Package guestinit is the /init of banger's initrd: it loads the kernel
// modules the guest needs (virtio-mmio, block, net, console, vsock) with
// parameters from the kernel command line, mounts the root drive and hands
// over to the rootfs's init. It runs inside the guest as PID 1; the host
// side (internal/kernel) writes the Config it reads.
//
// The kernel command line contract:
//
//	root=/dev/vda              root drive (required), mounted read-write
//	rootfstype=ext4            its filesystem (default ext4)
//	ro                         mount the root drive read-only
//	banger.modules=/dev/vdb    optional drive holding lib/modules/<release>,
//	                           mounted read-only there inside the new root
//	init=/sbin/init            the rootfs's init; when missing, banger's
//	                           agent (/usr/lib/banger/banger-agent) runs as PID 1
//	<module>.<param>=<value>   passed to that module when it is loaded
//	                           ('-' and '_' are the same in module names)
package guestinit

import "strings"

// ConfigPath is where the initrd's config lives inside the initrd.
const ConfigPath = "/banger-initrd.json"

// DefaultInit is the init run when the command line names none.
const DefaultInit = "/sbin/init"

// Config is /banger-initrd.json, written by the host when it builds the
// initrd.
type Config struct {
	Release string   `json:"release"` // uname -r of the kernel the modules are for
	Modules []Module `json:"modules"` // in load order: dependencies first
}

// Module is one kernel module inside the initrd.
type Module struct {
	Name string `json:"name"` // normalised: '_' not '-'
	Path string `json:"path"` // absolute path inside the initrd, uncompressed .ko
}

// options is what the initrd takes from the kernel command line.
type options struct {
	Root       string
	RootFSType string
	ReadOnly   bool
	ModulesDev string
	Init       string
	// Params maps a normalised module name to "param=value" tokens.
	Params map[string][]string
}

// NormalizeModule returns a module name with '-' replaced by '_', the
// form the kernel uses.
func NormalizeModule(name string) string { return strings.ReplaceAll(name, "-", "_") }

// parseCmdline parses /proc/cmdline.
func parseCmdline(cmdline string) options {
	o := options{RootFSType: "ext4", Init: DefaultInit, Params: map[string][]string{}}
	for _, tok := range splitCmdline(cmdline) {
		key, val, hasVal := strings.Cut(tok, "=")
		plain := unquote(val)
		switch {
		case key == "--":
			return o // the rest belongs to init
		case key == "root" && hasVal:
			o.Root = plain
		case key == "rootfstype" && hasVal:
			o.RootFSType = plain
		case key == "ro" && !hasVal:
			o.ReadOnly = true
		case key == "rw" && !hasVal:
			o.ReadOnly = false
		case key == "init" && hasVal:
			o.Init = plain
		case key == "banger.modules" && hasVal:
			o.ModulesDev = plain
		case strings.Contains(key, ".") && hasVal:
			mod, param, _ := strings.Cut(key, ".")
			mod = NormalizeModule(mod)
			o.Params[mod] = append(o.Params[mod], param+"="+val)
		}
	}
	return o
}

// moduleParams returns the parameter string for finit_module.
func (o options) moduleParams(name string) string {
	return strings.Join(o.Params[NormalizeModule(name)], " ")
}

// splitCmdline splits on spaces outside double quotes, keeping quotes.
func splitCmdline(s string) []string {
	var out []string
	var cur strings.Builder
	quoted := false
	for _, r := range s {
		switch {
		case r == '"':
			quoted = !quoted
			cur.WriteRune(r)
		case (r == ' ' || r == '\t' || r == '\n') && !quoted:
			if cur.Len() > 0 {
				out = append(out, cur.String())
				cur.Reset()
			}
		default:
			cur.WriteRune(r)
		}
	}
	if cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out
}

func unquote(s string) string { return strings.ReplaceAll(s, `"`, "") }
