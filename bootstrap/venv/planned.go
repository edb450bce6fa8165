package venv

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/volboot/volboot/bootstrap/wheel"
)

// PlannedFile is one file of a generation as Build makes it from the
// store (the skeleton's files are not among them: WriteSkeleton makes
// those).
type PlannedFile struct {
	Path   string // relative to the generation's root, '/'-separated
	Source string // the store file it is linked or copied from; "" for a written file
	Data   []byte // a written file's content (launchers, rewritten scripts, RECORD, INSTALLER, REQUESTED)
	Size   int64
	Exec   bool
	Copied bool // copied into every generation (dist-info), not linked
	// Entry is the store entry Source belongs to and EntryPath Source's
	// path in it, as its manifest lists it ('/'-separated); nil and ""
	// for a written file.
	Entry     *wheel.Entry
	EntryPath string
	// Hash is RECORD's "alg=digest" of the file; "" for bytecode volboot
	// compiled and for the store's RECORD.
	Hash string
}

// Files plans the generation pkgs make, exactly as Build would, and makes
// nothing: the local layout packs a generation's small files from this
// list (bootstrap/locallayout) instead of walking the tree on the volume.
// Every package must have its Entry. The same conflicts Build refuses are
// errors here.
func (b *Builder) Files(pkgs []Package) ([]PlannedFile, error) {
	if b.Python == nil {
		return nil, errors.New("venv: Builder.Python is nil")
	}
	l, err := LayoutFor(b.Python)
	if err != nil {
		return nil, err
	}
	entries := make([]*wheel.Entry, len(pkgs))
	for i, p := range pkgs {
		if p.Entry == nil {
			return nil, fmt.Errorf("venv: package %d has no store entry", i)
		}
		entries[i] = p.Entry
	}
	ops, err := b.plan(l, pkgs, entries, func([]*op) error { return nil })
	if err != nil {
		return nil, err
	}
	out := make([]PlannedFile, len(ops))
	for i, o := range ops {
		f := PlannedFile{Path: o.dst, Size: o.size, Exec: o.exec, Hash: o.hash}
		switch o.kind {
		case opWrite:
			f.Data = o.data
			f.Size = int64(len(o.data))
		case opCopy:
			f.Source, f.Copied = o.src, true
		default:
			f.Source = o.src
		}
		if f.Source != "" && o.pkg >= 0 {
			e := entries[o.pkg]
			if rel, ok := strings.CutPrefix(o.src, e.Dir+string(filepath.Separator)); ok {
				f.Entry, f.EntryPath = e, filepath.ToSlash(rel)
			}
		}
		out[i] = f
	}
	return out, nil
}
