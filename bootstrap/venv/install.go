package venv

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/volboot/volboot/bootstrap/wheel"
)

// Wheel is one verified wheel file a generation is to hold.
type Wheel struct {
	Source    wheel.Source
	Requested bool // a top-level requirement: its dist-info gets REQUESTED
}

// EnvDir is where generation id lives on a volume.
func EnvDir(volume, id string) string { return filepath.Join(volume, ".volboot", "envs", id) }

// StoreDir is the store of a volume.
func StoreDir(volume string) string { return filepath.Join(volume, ".volboot", "store") }

// Install makes generation dir hold exactly wheels: it unpacks into st
// whatever the store lacks (verifying and compiling as it goes), then
// builds the generation from the store entries. A complete generation
// already at dir is returned as is. On error nothing appears at dir; store
// entries that were completed stay (they are content-addressed and shared).
func Install(ctx context.Context, st *wheel.Store, b *Builder, dir string, wheels []Wheel) (*Marker, error) {
	if m, err := ReadMarker(dir); err == nil {
		return m, nil
	}
	srcs := make([]wheel.Source, len(wheels))
	for i, w := range wheels {
		srcs[i] = w.Source
	}
	entries, err := st.Unpack(ctx, srcs...)
	if err != nil {
		return nil, fmt.Errorf("generation %s: %w", filepath.Base(dir), err)
	}
	pkgs := make([]Package, len(wheels))
	for i, e := range entries {
		pkgs[i] = Package{Entry: e, Requested: wheels[i].Requested}
	}
	return b.Build(ctx, dir, pkgs)
}
