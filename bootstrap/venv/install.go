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
// whatever the store lacks (verifying and compiling as it goes) while it
// builds the generation, linking the packages the store already holds
// first. A complete generation already at dir is returned as is. On error
// nothing appears at dir; store entries that were completed stay (they
// are content-addressed and shared).
func Install(ctx context.Context, st *wheel.Store, b *Builder, dir string, wheels []Wheel) (*Marker, error) {
	if m, err := ReadMarker(dir); err == nil {
		return m, nil
	}
	shas := make([]string, len(wheels))
	for i, w := range wheels {
		shas[i] = w.Source.SHA256
	}
	have, _ := st.OpenAll(shas, nil)
	pkgs := make([]Package, len(wheels))
	var missing []wheel.Source
	slot := map[int]int{} // package -> index in missing
	for i, w := range wheels {
		pkgs[i] = Package{Entry: have[i], Requested: w.Requested}
		if have[i] == nil {
			slot[i] = len(missing)
			missing = append(missing, w.Source)
		}
	}
	if len(missing) == 0 {
		return b.Build(ctx, dir, pkgs)
	}
	// The unpack runs beside the build, which links each package the
	// store lacked as soon as its entry is complete. Install owns the
	// goroutine and waits for it on every path.
	var (
		unpackErr error
		unpacked  = make(chan struct{})
		got       = make([]*wheel.Entry, len(missing))
		arrived   = make([]chan struct{}, len(missing))
	)
	for k := range arrived {
		arrived[k] = make(chan struct{})
	}
	go func() {
		defer close(unpacked)
		_, unpackErr = st.UnpackEach(ctx, func(k int, e *wheel.Entry, _ error) {
			got[k] = e
			close(arrived[k])
		}, missing...)
	}()
	for i, k := range slot {
		pkgs[i].Pending = func() (*wheel.Entry, error) {
			select {
			case <-arrived[k]:
			case <-unpacked:
				select {
				case <-arrived[k]:
				default:
					return nil, fmt.Errorf("%s was not unpacked", missing[k].Filename)
				}
			}
			if got[k] == nil {
				return nil, fmt.Errorf("%s was not unpacked", missing[k].Filename)
			}
			return got[k], nil
		}
	}
	m, err := b.Build(ctx, dir, pkgs)
	<-unpacked
	if unpackErr != nil {
		return nil, fmt.Errorf("generation %s: %w", filepath.Base(dir), unpackErr)
	}
	return m, err
}
