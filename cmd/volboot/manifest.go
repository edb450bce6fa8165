package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/volboot/volboot/manifests"
)

func (a *app) manifestCommand() *cobra.Command {
	var embedded strings.Builder
	for _, n := range manifests.EmbeddedNames() {
		fmt.Fprintf(&embedded, "  %s%s", manifests.EmbeddedPrefix, n)
		if n == manifests.Default {
			embedded.WriteString("  (the default of --manifest)")
		}
		embedded.WriteString("\n")
	}
	c := &cobra.Command{
		Use:   "manifest",
		Short: "Work with manifests",
		Long: `A manifest (volboot.toml) names the Python versions, the PEP 751 lock, the
indexes, the groups of requirements, the model files and how to run the handler.
--manifest and "manifest check" take a file, or one of the manifests built into
volboot:
` + embedded.String(),
	}
	c.AddCommand(&cobra.Command{
		Use:   "check FILE",
		Short: "Validate a manifest and its lock (FILE may be embedded:NAME)",
		Example: `  volboot manifest check volboot.toml
  volboot manifest check embedded:` + manifests.Default,
		Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			a.opts.manifest = args[0]
			return a.checkManifest()
		},
	})
	return c
}

// checkManifest validates the manifest, loads its lock and cross-checks
// them for the default container platform; exit 2 on any error.
func (a *app) checkManifest() error {
	m, src, err := a.loadManifest()
	if err != nil {
		return err
	}
	l, err := src.Parse()
	if err != nil {
		return inputError(err)
	}
	p := m.DefaultPlatform()
	r := m.CheckLock(l, p)
	for _, w := range r.Warnings {
		fmt.Fprintf(a.stdout, "warning: %s\n", w)
	}
	for _, e := range r.Errors {
		fmt.Fprintf(a.stdout, "error: %s\n", e)
	}
	if len(r.Errors) > 0 {
		pe := &manifests.PairError{File: m.File, Problems: r.Errors}
		first, _, _ := strings.Cut(pe.Error(), "\n")
		return usageError("%s", first)
	}
	reqs := 0
	for _, g := range m.Groups {
		reqs += len(g.Requirements)
	}
	fmt.Fprintf(a.stdout, "ok: %s: %d groups, %d requirements, %d models; lock %s: %d packages, checked for %s\n",
		m.File, len(m.Groups), reqs, len(m.Models), l.File, len(l.Packages), p)
	return nil
}
