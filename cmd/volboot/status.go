package main

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/volboot/volboot/bootstrap"
)

func (a *app) statusCommand() *cobra.Command {
	var verify, asJSON bool
	c := &cobra.Command{
		Use:   "status",
		Short: "Report drift between the manifest and the volume (exit 0 in sync or degraded, 1 drift, 2 error)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := a.syncConfig(nil, false)
			if err != nil {
				return err
			}
			r, err := bootstrap.Status(cmd.Context(), cfg, verify)
			if err != nil {
				return &exitError{code: exitUsage, err: err}
			}
			if asJSON {
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(r); err != nil {
					return err
				}
			} else {
				a.printStatus(r)
			}
			if !r.InSync {
				return &exitError{code: exitDrift}
			}
			return nil
		},
	}
	c.Flags().BoolVar(&verify, "verify", false, "also check every installed file against its RECORD")
	c.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	return c
}

func (a *app) printStatus(r *bootstrap.StatusReport) {
	gen := "none"
	if r.Generation != nil {
		gen = *r.Generation
	}
	state := map[string]string{"in-sync": "in sync", "degraded": "in sync, degraded", "drift": "DRIFT"}[r.State]
	fmt.Fprintf(a.stdout, "%s: generation %s (venv -> %s)\n", state, gen, r.Current)
	if r.Trash > 0 {
		fmt.Fprintf(a.stdout, "trash: %d trees waiting to be removed (the next volboot run does it once its handler is ready, or volboot gc)\n", r.Trash)
	}
	if r.Holder != nil {
		fmt.Fprintf(a.stdout, "lock held by %s pid %d: %s\n", r.Holder.Host, r.Holder.PID, r.Holder.Phase)
	}
	tw := tabwriter.NewWriter(a.stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "GROUP\tSTATE\tREASON")
	for _, g := range r.Groups {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", g.Name, g.State, g.Reason)
	}
	tw.Flush()
	if len(r.Notes) > 0 {
		tw = tabwriter.NewWriter(a.stdout, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NOTE\tPACKAGE\tDETAIL")
		for _, d := range r.Notes {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", d.Kind, d.Package, d.Detail)
		}
		tw.Flush()
	}
	if len(r.Drift) > 0 {
		tw = tabwriter.NewWriter(a.stdout, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "DRIFT\tPACKAGE\tDETAIL")
		for _, d := range r.Drift {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", d.Kind, d.Package, d.Detail)
		}
		tw.Flush()
	}
}
