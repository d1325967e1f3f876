package main

import (
	"context"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"banger/internal/client"
)

// The list, inspect and delete commands of images and kernels are alike
// but for the calls and the columns; these build them.

// newListCmd returns a list command: a table of header and row(item)
// lines (tab-separated), or --json.
func newListCmd[T any](short string, list func(*client.Client, context.Context) ([]T, error), header string, row func(T) string) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use: "list", Aliases: []string{"ls"}, Short: short, Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			items, err := list(c, cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(items)
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, header)
			for _, it := range items {
				fmt.Fprintln(tw, row(it))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// newInspectCmd returns an inspect NAME command: aligned fields(item), or
// --json.
func newInspectCmd[T any](short string, get func(*client.Client, context.Context, string) (T, error), fields func(T) [][2]string) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use: "inspect NAME", Short: short, Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			it, err := get(c, cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(it)
			}
			return printFields(fields(it))
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// newDeleteCmd returns a delete NAME command.
func newDeleteCmd(short string, del func(*client.Client, context.Context, string) error) *cobra.Command {
	return &cobra.Command{
		Use: "delete NAME", Short: short, Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			if err := del(c, cmd.Context(), args[0]); err != nil {
				return err
			}
			cmd.Printf("%s deleted\n", args[0])
			return nil
		},
	}
}

// created is the created field of inspect: local time and age.
func created(t time.Time) string {
	return t.Local().Format(time.RFC3339) + " (" + age(t) + " ago)"
}
