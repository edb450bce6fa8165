package main

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/volboot/volboot/bootstrap"
	"github.com/volboot/volboot/bootstrap/fetch"
	"github.com/volboot/volboot/bootstrap/locallayout"
)

func (a *app) gcCommand() *cobra.Command {
	var dryRun, asJSON bool
	c := &cobra.Command{
		Use:   "gc",
		Short: "Drop what no manifest, generation or live lease needs",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := a.syncConfig(nil, true)
			if err != nil {
				return err
			}
			r, err := bootstrap.GC(cmd.Context(), cfg, dryRun)
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			// Then this container's local trees: those of generations the
			// volume no longer keeps, unless a process runs from them.
			var local *locallayout.CollectReport
			if cfg.Local.Dir != "" {
				lr, err := cfg.CollectLocal(cmd.Context(), true, dryRun, r.Kept...)
				if err != nil {
					return &exitError{code: 1, err: err}
				}
				local = &lr
			}
			if asJSON {
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(struct {
					*bootstrap.GCReport
					Local *locallayout.CollectReport `json:"local,omitempty"`
				}{r, local})
			}
			verb := "removed"
			if dryRun {
				verb = "would remove"
			}
			tw := tabwriter.NewWriter(a.stdout, 2, 4, 2, ' ', 0)
			for _, it := range r.Removed {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", it.Kind, fetch.FormatSize(it.Bytes), it.Path, it.Why)
			}
			tw.Flush()
			for _, k := range r.Kept {
				fmt.Fprintf(a.stdout, "kept generation %s\n", k)
			}
			fmt.Fprintf(a.stdout, "%s %d items, %s\n", verb, len(r.Removed), fetch.FormatSize(r.Bytes))
			if local != nil {
				for _, id := range local.Removed {
					fmt.Fprintf(a.stdout, "%s local tree %s\n", verb, id)
				}
				for _, id := range local.InUse {
					fmt.Fprintf(a.stdout, "kept local tree %s: in use\n", id)
				}
				if local.Leftovers > 0 {
					fmt.Fprintf(a.stdout, "%s %d half-made local trees of processes that are gone\n", verb, local.Leftovers)
				}
				if len(local.Removed) > 0 || local.Leftovers > 0 {
					fmt.Fprintf(a.stdout, "%s %s of local disk under %s\n", verb, fetch.FormatSize(local.Bytes), cfg.Local.Dir)
				}
			}
			return nil
		},
	}
	c.Flags().BoolVar(&dryRun, "dry-run", false, "list what would go, with sizes, and remove nothing")
	c.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	return c
}
