package venv_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/volboot/volboot/bootstrap/atomicfile"
	"github.com/volboot/volboot/bootstrap/interp"
	"github.com/volboot/volboot/bootstrap/trash"
	"github.com/volboot/volboot/bootstrap/venv"
	"github.com/volboot/volboot/bootstrap/wheel"
	"github.com/volboot/volboot/bootstrap/wheel/wheeltest"
)

// treeSum describes every path under root: kind, mode, and content digest
// or link target.
func treeSum(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			tgt, _ := os.Readlink(p)
			out[rel] = "link " + tgt
		case fi.IsDir():
			out[rel] = "dir"
		default:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			out[rel] = fmt.Sprintf("%v %x", fi.Mode(), sha256.Sum256(b))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestResumePartialGeneration: a generation's staging directory a killed
// builder left lacks its marker and some links, holds a link replaced by a
// copy of another inode, a launcher, INSTALLER and a dist-info copy cut
// short, and a wrong interpreter link. A Builder whose Adopt allows it completes it: the
// result is the tree a fresh build makes, every store file a hard link to
// the store again, and the staging directory is gone.
func TestResumePartialGeneration(t *testing.T) {
	info := python(t)
	vol := t.TempDir()
	w := specWheel(t, t.TempDir(), wheeltest.Spec{
		Name: "resumed", Version: "1.0",
		Files: []wheeltest.File{
			{Name: "resumed/__init__.py", Data: []byte("X = 1\n")},
			{Name: "resumed/a.py", Data: []byte("A = 1\n")},
			{Name: "resumed/b.py", Data: []byte("B = 2\n")},
		},
		EntryPoints: "[console_scripts]\nresumed-cli = resumed:main\n",
	})
	dir := install(t, info, vol, "g1", []wheelFile{w}, venv.Hardlink)
	want := treeSum(t, dir)

	partial := filepath.Join(filepath.Dir(dir), ".g1"+wheel.PartialSuffix+".vbtmp.otherhost.4242.0123456789ab")
	if err := os.Rename(dir, partial); err != nil {
		t.Fatal(err)
	}
	sp := filepath.Join(partial, "lib", "python"+info.PyVersion(), "site-packages")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Remove(filepath.Join(partial, venv.CompleteName)))
	must(os.Remove(filepath.Join(sp, "resumed", "a.py")))
	b, _ := os.ReadFile(filepath.Join(sp, "resumed", "b.py"))
	must(os.Remove(filepath.Join(sp, "resumed", "b.py")))
	must(os.WriteFile(filepath.Join(sp, "resumed", "b.py"), b, 0o644)) // same bytes, not the store's inode
	must(os.WriteFile(filepath.Join(partial, "bin", "resumed-cli"), []byte("#!"), 0o755))
	must(os.WriteFile(filepath.Join(sp, "resumed-1.0.dist-info", "INSTALLER"), nil, 0o644))
	must(os.Truncate(filepath.Join(sp, "resumed-1.0.dist-info", "METADATA"), 10)) // a copy cut short
	must(os.Remove(filepath.Join(partial, "bin", "python3")))
	must(os.Symlink("/nonexistent/python", filepath.Join(partial, "bin", "python3")))
	// A copy whose mtime was never set (killed between close and Chtimes):
	// same bytes, made again, so with its source's mtime. And one left
	// whole: kept. Its atime tells (copyFile sets atime and mtime to the
	// source's mtime; keeping only stats it), not its inode number, which
	// a file made again may well reuse.
	di := filepath.Join(sp, "resumed-1.0.dist-info")
	must(os.Chtimes(filepath.Join(di, "entry_points.txt"), time.Unix(1, 0), time.Unix(1, 0)))
	times := func(p string) (atime, mtime time.Time) {
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		return time.Unix(st.Atim.Unix()), fi.ModTime()
	}
	_, wheelMtime := times(filepath.Join(di, "WHEEL"))
	marked := time.Unix(12345, 0)
	must(os.Chtimes(filepath.Join(di, "WHEEL"), marked, wheelMtime))
	// The marker's temporary file, cut short by the kill.
	must(os.WriteFile(filepath.Join(partial, "."+venv.CompleteName+".vbtmp.otherhost.4242.0123456789ab"), []byte("{"), 0o644))

	for _, adopt := range []bool{false, true} {
		b := &venv.Builder{Python: info, Creator: "volboot test"}
		if adopt {
			b.Adopt = func(atomicfile.TempInfo, fs.DirEntry) bool { return true }
		}
		st := &wheel.Store{Dir: venv.StoreDir(vol)}
		e, err := st.Open(w.sha)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.Build(context.Background(), dir, []venv.Package{{Entry: e, Requested: true}}); err != nil {
			t.Fatal(err)
		}
		_, perr := os.Lstat(partial)
		if !adopt {
			if perr != nil {
				t.Fatalf("without Adopt the partial build was touched: %v", perr)
			}
			if err := os.RemoveAll(dir); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if perr == nil {
			t.Fatal("the partial build is still there after it was taken over")
		}
		// Before anything reads the files (a read may move atime).
		di := filepath.Join(dir, "lib", "python"+info.PyVersion(), "site-packages", "resumed-1.0.dist-info")
		if atime, _ := times(filepath.Join(di, "WHEEL")); !atime.Equal(marked) {
			t.Errorf("a whole copy was made again instead of kept (atime %v)", atime)
		}
		if _, mtime := times(filepath.Join(di, "entry_points.txt")); mtime.Equal(time.Unix(1, 0)) {
			t.Errorf("a copy with the wrong mtime was kept")
		}
		got := treeSum(t, dir)
		for p, s := range want {
			if got[p] != s {
				t.Errorf("%s: %q, a fresh build has %q", p, got[p], s)
			}
		}
		for p := range got {
			if _, ok := want[p]; !ok {
				t.Errorf("%s: not in a fresh build", p)
			}
		}
		for _, f := range []string{"a.py", "b.py", "__init__.py"} {
			fi, err := os.Stat(filepath.Join(dir, "lib", "python"+info.PyVersion(), "site-packages", "resumed", f))
			if err != nil {
				t.Fatal(err)
			}
			if n := fi.Sys().(*syscall.Stat_t).Nlink; n < 2 {
				t.Errorf("%s has %d links: not linked to the store", f, n)
			}
		}
	}
}

// TestCancelledBuildLeavesItsStaging: a build stopped by its context (a
// SIGTERM, a lost lock) leaves what it made for the next builder of the id
// to complete, rather than throwing it away; a build that fails for good
// (a package that is not there) puts it in the trash.
func TestCancelledBuildLeavesItsStaging(t *testing.T) {
	info := python(t)
	vol := t.TempDir()
	w := specWheel(t, t.TempDir(), wheeltest.Spec{Name: "first", Version: "1.0", Files: []wheeltest.File{{Name: "first/__init__.py", Data: []byte("X = 1\n")}}})
	install(t, info, vol, "g0", []wheelFile{w}, venv.Hardlink)
	e, err := (&wheel.Store{Dir: venv.StoreDir(vol)}).Open(w.sha)
	if err != nil {
		t.Fatal(err)
	}
	can := &trash.Can{Dir: filepath.Join(vol, ".volboot", "trash")}
	staging := func() []string {
		m, _ := filepath.Glob(filepath.Join(vol, ".volboot", "envs", ".g1"+wheel.PartialSuffix+".vbtmp.*"))
		return m
	}
	for _, cancelled := range []bool{true, false} {
		ctx, cancel := context.WithCancel(context.Background())
		pending := func() (*wheel.Entry, error) {
			if cancelled {
				cancel()
				<-ctx.Done()
				return nil, ctx.Err()
			}
			return nil, errors.New("not in the store")
		}
		b := &venv.Builder{Python: info, Creator: "volboot test", Trash: can}
		_, err := b.Build(ctx, venv.EnvDir(vol, "g1"), []venv.Package{{Entry: e}, {Pending: pending}})
		cancel()
		if err == nil {
			t.Fatal("the build succeeded")
		}
		if got := staging(); cancelled && len(got) != 1 {
			t.Fatalf("cancelled: staging directories %v, want the one it made", got)
		} else if !cancelled && len(got) != 1 {
			t.Fatalf("failed: staging directories %v, want only the cancelled build's", got)
		}
		if n := can.Items(); cancelled && n != 0 || !cancelled && n != 1 {
			t.Fatalf("cancelled %v: %d items in the trash", cancelled, n)
		}
	}
}

// TestFilledRecordSkipsTheFill: under --durability files a builder records
// that every file was made before it syncs the directories; one taking the
// staging directory over then skips the fill (a file removed behind the
// record's back stays missing, which proves nothing was checked), and the
// finished generation does not hold the record. Under the other modes the
// record is not trusted and the tree is checked.
func TestFilledRecordSkipsTheFill(t *testing.T) {
	info := python(t)
	for _, mode := range []wheel.SyncMode{wheel.SyncFiles, wheel.SyncFS} {
		vol := t.TempDir()
		w := specWheel(t, t.TempDir(), wheeltest.Spec{Name: "filled", Version: "1.0", Files: []wheeltest.File{
			{Name: "filled/__init__.py", Data: []byte("X = 1\n")}, {Name: "filled/a.py", Data: []byte("A = 1\n")}}})
		dir := install(t, info, vol, "g1", []wheelFile{w}, venv.Hardlink)
		partial := asPartial(t, dir)
		a := filepath.Join("lib", "python"+info.PyVersion(), "site-packages", "filled", "a.py")
		if err := os.Remove(filepath.Join(partial, a)); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(partial, ".volboot-filled"), []byte("0\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		takeOver(t, info, vol, dir, w.sha, mode, ".volboot-filled")
		_, err := os.Lstat(filepath.Join(dir, a))
		if mode == wheel.SyncFiles && err == nil {
			t.Errorf("under --durability files the fill was not skipped")
		}
		if mode != wheel.SyncFiles && err != nil {
			t.Errorf("mode %v: the record was trusted: %v", mode, err)
		}
	}
}

// TestBatchLogSkipsFinishedBatches: under --durability files each finished
// batch is logged, and a builder taking the staging directory over skips
// the batches the log lists (a file removed behind the log's back stays
// missing, which proves they were not checked) but makes the others; a
// line cut short by the kill is not trusted; the finished generation does
// not hold the log. Under the other modes the log is not trusted.
func TestBatchLogSkipsFinishedBatches(t *testing.T) {
	info := python(t)
	for _, mode := range []wheel.SyncMode{wheel.SyncFiles, wheel.SyncFS} {
		vol := t.TempDir()
		w := specWheel(t, t.TempDir(), wheeltest.Spec{Name: "logged", Version: "1.0", Files: []wheeltest.File{
			{Name: "logged/__init__.py", Data: []byte("X = 1\n")}, {Name: "logged/a.py", Data: []byte("A = 1\n")},
			{Name: "other/c.py", Data: []byte("C = 1\n")}, {Name: "torn/d.py", Data: []byte("D = 1\n")}}})
		dir := install(t, info, vol, "g1", []wheelFile{w}, venv.Hardlink)
		partial := asPartial(t, dir)
		site := filepath.Join("lib", "python"+info.PyVersion(), "site-packages")
		for _, f := range []string{"logged/a.py", "other/c.py", "torn/d.py"} {
			if err := os.Remove(filepath.Join(partial, site, f)); err != nil {
				t.Fatal(err)
			}
		}
		slash := func(p ...string) string { return filepath.ToSlash(filepath.Join(append([]string{site}, p...)...)) }
		torn := venv.BatchLogLine([]string{slash("torn", "d.py")}, 0)
		// other/c.py's batch logged by name and size, but with the digest
		// of other destinations: another plan's batch, not trusted.
		other := strings.Replace(venv.BatchLogLine([]string{slash("other", "x.py")}, 0), slash("other", "x.py"), slash("other", "c.py"), 1)
		log := venv.BatchLogLine([]string{slash("logged", "__init__.py"), slash("logged", "a.py")}, 0) + other +
			torn[:len(torn)-1] // cut short: no newline
		if err := os.WriteFile(filepath.Join(partial, ".volboot-batches"), []byte(log), 0o644); err != nil {
			t.Fatal(err)
		}
		takeOver(t, info, vol, dir, w.sha, mode, ".volboot-batches")
		for _, f := range []string{"other/c.py", "torn/d.py"} {
			if _, err := os.Lstat(filepath.Join(dir, site, f)); err != nil {
				t.Errorf("mode %v: %s of a batch the log does not vouch for was not made again: %v", mode, f, err)
			}
		}
		_, err := os.Lstat(filepath.Join(dir, site, "logged", "a.py"))
		if mode == wheel.SyncFiles && err == nil {
			t.Errorf("under --durability files the logged batch was checked again")
		}
		if mode != wheel.SyncFiles && err != nil {
			t.Errorf("mode %v: the log was trusted: %v", mode, err)
		}
	}
}

// asPartial makes the complete generation at dir look like the staging
// directory a killed builder on another host left, and returns its path.
func asPartial(t *testing.T, dir string) string {
	t.Helper()
	partial := filepath.Join(filepath.Dir(dir), "."+filepath.Base(dir)+wheel.PartialSuffix+".vbtmp.otherhost.4242.0123456789ab")
	if err := os.Rename(dir, partial); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(partial, venv.CompleteName))
	return partial
}

// takeOver builds the generation at dir again, from the store entry sha,
// with a Builder in mode that takes the partial build over, and requires
// it complete without the bookkeeping file record.
func takeOver(t *testing.T, info *interp.Info, vol, dir, sha string, mode wheel.SyncMode, record string) {
	t.Helper()
	e, err := (&wheel.Store{Dir: venv.StoreDir(vol)}).Open(sha)
	if err != nil {
		t.Fatal(err)
	}
	b := &venv.Builder{Python: info, Creator: "volboot test", Sync: mode, Adopt: func(atomicfile.TempInfo, fs.DirEntry) bool { return true }}
	if _, err := b.Build(context.Background(), dir, []venv.Package{{Entry: e, Requested: true}}); err != nil {
		t.Fatal(err)
	}
	if _, err := venv.ReadMarker(dir); err != nil {
		t.Fatalf("mode %v: no marker: %v", mode, err)
	}
	if _, err := os.Lstat(filepath.Join(dir, record)); err == nil {
		t.Errorf("mode %v: the finished generation holds %s", mode, record)
	}
}

// TestPendingPackagesLinkedAsTheyArrive: a package whose entry arrives is
// linked while one listed before it is still pending, as a first install
// links each wheel while the others still unpack; the generation is the
// same as one built with every entry at hand.
func TestPendingPackagesLinkedAsTheyArrive(t *testing.T) {
	info := python(t)
	vol := t.TempDir()
	late := specWheel(t, t.TempDir(), wheeltest.Spec{Name: "aaa-late", Version: "1.0", Files: []wheeltest.File{{Name: "late/__init__.py", Data: []byte("L = 1\n")}}})
	early := specWheel(t, t.TempDir(), wheeltest.Spec{Name: "zzz-early", Version: "1.0", Files: []wheeltest.File{{Name: "early/__init__.py", Data: []byte("E = 1\n")}}})
	whole := install(t, info, vol, "g0", []wheelFile{late, early}, venv.Hardlink)
	st := &wheel.Store{Dir: venv.StoreDir(vol)}
	entry := func(sha string) *wheel.Entry {
		e, err := st.Open(sha)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	site := filepath.Join("lib", "python"+info.PyVersion(), "site-packages")
	linked := make(chan struct{})
	var seen error
	lateArrives := func() (*wheel.Entry, error) {
		// Wait for the other package's file in the staging directory.
		deadline := time.Now().Add(30 * time.Second)
		for {
			m, _ := filepath.Glob(filepath.Join(vol, ".volboot", "envs", ".g1"+wheel.PartialSuffix+".vbtmp.*", site, "early", "__init__.py"))
			if len(m) == 1 {
				close(linked)
				return entry(late.sha), nil
			}
			if time.Now().After(deadline) {
				seen = errors.New("zzz-early was not linked while aaa-late was pending")
				return nil, seen
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	earlyArrives := func() (*wheel.Entry, error) { return entry(early.sha), nil }
	b := &venv.Builder{Python: info, Creator: "volboot test"}
	dir := venv.EnvDir(vol, "g1")
	if _, err := b.Build(context.Background(), dir, []venv.Package{{Pending: lateArrives, Requested: true}, {Pending: earlyArrives, Requested: true}}); err != nil {
		t.Fatalf("%v (%v)", err, seen)
	}
	<-linked
	if a, b := fileSet(t, whole), fileSet(t, dir); !slices.Equal(a, b) {
		onlyA, onlyB := diff(a, b)
		t.Fatalf("the generation built as entries arrived differs: only in the whole build %s, only in it %s", short(onlyA), short(onlyB))
	}
}
