package locallayout

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/volboot/volboot/bootstrap/pack"
)

// Stale says why the complete local tree at dir would be laid out again
// by the next Materialize for o (made from another pack, before the
// machine restarted, for the volume at another path), or "" when it
// would be reused or is not complete.
func Stale(dir string, o Options) string {
	if o.BootID == "" {
		o.BootID = bootID()
	}
	m, why := reusable(dir, o)
	if m == nil {
		return ""
	}
	return why
}

// Verify checks the local tree at dir against its pack, for status
// --verify: the marker matches o, every record of the pack is there as
// the pack says (a file of its bytes and mode, a link to its target, a
// volume file of its size behind each volume link), and the tree holds
// nothing else. It returns one sentence per problem (at most 20, then a
// count), or an error when the pack cannot be read.
func Verify(dir string, o Options) ([]string, error) {
	var problems []string
	add := func(format string, args ...any) {
		problems = append(problems, fmt.Sprintf(format, args...))
	}
	if o.BootID == "" {
		o.BootID = bootID()
	}
	if _, why := reusable(dir, o); why != "" {
		add("local tree %s: %s", dir, why)
		return problems, nil
	}
	f, err := os.Open(o.PackPath)
	if err != nil {
		return nil, fmt.Errorf("local tree %s: its pack: %w", dir, err)
	}
	defer f.Close()
	r, err := newPackReader(f, o)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	seen := map[string]bool{MarkerName: true}
	for {
		e, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		seen[e.Path] = true
		p := filepath.Join(dir, filepath.FromSlash(e.Path))
		fi, err := os.Lstat(p)
		if err != nil {
			add("%s: %v", e.Path, err)
			continue
		}
		switch e.Kind {
		case pack.Dir:
			if !fi.IsDir() {
				add("%s: not a directory", e.Path)
			}
		case pack.File, pack.Exec:
			if !fi.Mode().IsRegular() {
				add("%s: not a regular file", e.Path)
				continue
			}
			if (fi.Mode()&0o100 != 0) != (e.Kind == pack.Exec) {
				add("%s: mode %v", e.Path, fi.Mode())
			}
			if fi.ModTime().Unix() != e.MTime/1e9 {
				add("%s: modified at %s, the pack says %s (its bytecode would be stale)", e.Path, fi.ModTime().UTC().Format(time.RFC3339), time.Unix(0, e.MTime).UTC().Format(time.RFC3339))
			}
			want, err := io.ReadAll(r)
			if err != nil {
				return nil, err
			}
			got, err := os.ReadFile(p)
			if err != nil {
				add("%s: %v", e.Path, err)
			} else if !bytes.Equal(got, want) {
				add("%s: content differs from the pack's", e.Path)
			}
		case pack.Symlink, pack.VolumeLink:
			target := e.Target
			if e.Kind == pack.VolumeLink {
				target = filepath.Join(o.Volume, filepath.FromSlash(e.Target))
			}
			if t, err := os.Readlink(p); err != nil || t != target {
				add("%s: not a link to %s", e.Path, target)
				continue
			}
			if e.Kind == pack.VolumeLink {
				if ti, err := os.Stat(target); err != nil {
					add("%s: its file on the volume: %v", e.Path, err)
				} else if ti.Size() != e.Size {
					add("%s: its file on the volume has %d bytes, the pack says %d", e.Path, ti.Size(), e.Size)
				}
			}
		}
	}
	var extra []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		if !seen[rel] && !d.IsDir() {
			extra = append(extra, rel)
		}
		return nil
	})
	sort.Strings(extra)
	for _, x := range extra {
		add("%s: not in the pack (installed by hand?)", x)
	}
	if len(problems) > 20 {
		n := len(problems) - 20
		problems = append(problems[:20], fmt.Sprintf("and %d more", n))
	}
	return problems, nil
}
