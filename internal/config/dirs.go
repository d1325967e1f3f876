package config

import (
	"os"
	"path/filepath"
)

// HomeEnv moves all of banger's state, config, cache and sockets under one
// directory when set.
const HomeEnv = "BANGER_HOME"

// Dirs are the directories banger uses.
type Dirs struct {
	State  string // daemon state: database, VMs, images, kernels, socket
	Config string // user config: config.toml, ssh keys
	Cache  string // user cache: OCI blobs, downloads
}

// RunDir holds the daemon's API socket: mode 0700, owned by the user the
// daemon serves, so no one else can even reach the socket.
func (d Dirs) RunDir() string { return filepath.Join(d.State, "run") }

// Socket is the daemon's API socket.
func (d Dirs) Socket() string { return filepath.Join(d.RunDir(), "bangerd.sock") }

// Lock is the file the daemon holds locked while it runs.
func (d Dirs) Lock() string { return filepath.Join(d.State, "bangerd.lock") }

// ConfigFile is the user's config.toml.
func (d Dirs) ConfigFile() string { return filepath.Join(d.Config, "config.toml") }

// DefaultDirs returns the directories for this process: everything under
// $BANGER_HOME when it is set, else /var/lib/banger, ~/.config/banger and
// ~/.cache/banger. Under sudo, the config and cache of the invoking user
// are used.
func DefaultDirs() Dirs {
	if h := os.Getenv(HomeEnv); h != "" {
		h, _ = filepath.Abs(h)
		return Dirs{
			State:  filepath.Join(h, "state"),
			Config: filepath.Join(h, "config"),
			Cache:  filepath.Join(h, "cache"),
		}
	}
	home := userHome()
	cfg := os.Getenv("XDG_CONFIG_HOME")
	if cfg == "" {
		cfg = filepath.Join(home, ".config")
	}
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		cache = filepath.Join(home, ".cache")
	}
	return Dirs{
		State:  "/var/lib/banger",
		Config: filepath.Join(cfg, "banger"),
		Cache:  filepath.Join(cache, "banger"),
	}
}

func userHome() string {
	if u := os.Getenv("SUDO_USER"); u != "" && os.Geteuid() == 0 {
		if h := lookupHome(u); h != "" {
			return h
		}
	}
	h, err := os.UserHomeDir()
	if err != nil {
		return "/root"
	}
	return h
}
