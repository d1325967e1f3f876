package doctor

import (
	"fmt"
	"io"
	"text/tabwriter"
)

// Render writes the report as a table for people: one row per check, its
// fix under it, then the VMM choice and a verdict.
func Render(w io.Writer, r Report) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	warns, fails := 0, 0
	for _, c := range r.Checks {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", c.Status, c.Name, c.Detail)
		if c.Fix != "" {
			fmt.Fprintf(tw, "\t\tfix: %s\n", c.Fix)
		}
		switch {
		case c.Status == StatusWarn, c.Status == StatusFail && !c.Required:
			warns++
		case c.Status == StatusFail:
			fails++
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if _, err := fmt.Fprintf(w, "\nvmm = %s: %s (%s): %s\n", r.VMMSetting, r.VMM, r.Accel, r.VMMReason); err != nil {
		return err
	}
	verdict := "ready"
	if !r.OK() {
		verdict = "not ready"
	}
	_, err := fmt.Fprintf(w, "%s: %d required check(s) failed, %d warning(s)\n", verdict, fails, warns)
	return err
}
