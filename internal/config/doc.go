// Package config locates banger's directories and reads the user's
// config.toml.
//
// Every key in config.toml is optional. Load applies the defaults, checks
// every value and reports each problem with the file, the line and the key,
// listing the valid values. Sources records where each effective value came
// from, and Show renders the result for `banger config show`.
package config
