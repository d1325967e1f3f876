package main

import (
	"github.com/spf13/cobra"

	"banger/internal/config"
)

func newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Show banger's configuration"}
	var asJSON bool
	show := &cobra.Command{
		Use:   "show",
		Short: "Print the effective config and where each value came from",
		Long: `Print the effective configuration: the defaults overlaid with
config.toml (` + "`banger config show`" + ` names the file). Each value says whether it
is a default or which line of the file set it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path := dirs().ConfigFile()
			cfg, src, err := config.Load(path)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(config.Entries(cfg, src))
			}
			cmd.Printf("# %s\n%s", path, config.Show(cfg, src))
			return nil
		},
	}
	show.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.AddCommand(show)
	return cmd
}
