package locallayout

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/volboot/volboot/bootstrap/atomicfile"
	"github.com/volboot/volboot/bootstrap/venv"
)

// framesFixture is a volume with a store of n small files and the pack
// options of a generation made of them: 1 + n + 1 records (a skeleton
// link, the files, pyvenv.cfg), so n = 1300 makes three frames.
type framesFixture struct {
	vol, packs string
	files      []venv.PlannedFile
}

func newFramesFixture(t *testing.T, n int) *framesFixture {
	t.Helper()
	f := &framesFixture{vol: t.TempDir()}
	f.packs = filepath.Join(f.vol, ".volboot", "packs")
	store := filepath.Join(f.vol, ".volboot", "store", "e")
	if err := os.MkdirAll(store, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		src := filepath.Join(store, fmt.Sprintf("m%05d.py", i))
		data := fmt.Sprintf("X = %d\n", i)
		if err := os.WriteFile(src, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		f.files = append(f.files, venv.PlannedFile{Path: fmt.Sprintf("lib/site/m%05d.py", i), Source: src, Size: int64(len(data))})
	}
	return f
}

func (f *framesFixture) options(adopt bool) PackOptions {
	o := PackOptions{
		Volume: f.vol, Dir: f.packs, Generation: "gen1", Files: f.files, Scripts: "bin",
		Skeleton: func(dir string) error {
			if err := os.WriteFile(filepath.Join(dir, "pyvenv.cfg"), []byte("home = /usr/bin\n"), 0o644); err != nil {
				return err
			}
			if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
				return err
			}
			return os.Symlink("/usr/bin/python3", filepath.Join(dir, "bin", "python"))
		},
	}
	if adopt {
		// The tests' builders are one process: take over any.
		o.Adopt = func(atomicfile.TempInfo, fs.DirEntry) bool { return true }
	}
	return o
}

// source is the store file of file i.
func (f *framesFixture) source(i int) string { return f.files[i].Source }

// stages lists the frames' staging directories in the packs directory.
func (f *framesFixture) stages(t *testing.T) []string {
	t.Helper()
	var out []string
	ents, _ := os.ReadDir(f.packs)
	for _, e := range ents {
		if ti, ok := atomicfile.ParseTempName(e.Name()); ok && e.IsDir() && strings.HasSuffix(ti.Final, ".partial") {
			out = append(out, filepath.Join(f.packs, e.Name()))
		}
	}
	return out
}

// killedAt makes a builder stop for good in frame 2 (a store file of it
// missing), as a kill there would, and checks it kept frames 0 and 1.
func (f *framesFixture) killedAt(t *testing.T, o PackOptions) {
	t.Helper()
	missing := f.source(1100)
	if err := os.Rename(missing, missing+".away"); err != nil {
		t.Fatal(err)
	}
	if _, err := BuildPack(context.Background(), o); err == nil {
		t.Fatal("a pack was built with a store file missing")
	}
	if err := os.Rename(missing+".away", missing); err != nil {
		t.Fatal(err)
	}
	stages := f.stages(t)
	if len(stages) != 1 {
		t.Fatalf("the failed builder left %d staging directories, want 1: %v", len(stages), stages)
	}
	ents, _ := os.ReadDir(stages[0])
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if len(names) != 2 || !strings.HasPrefix(names[0], "0-") || !strings.HasPrefix(names[1], "1-") {
		t.Fatalf("the failed builder kept %v, want frames 0 and 1", names)
	}
}

// A builder that takes over a stopped one's frames puts them first without
// reading their files again, and the pack is the bytes an undisturbed
// builder writes; the staging directory is gone once the pack is in place.
func TestBuildPackKeepsFrames(t *testing.T) {
	f := newFramesFixture(t, 1300)
	want, err := BuildPack(context.Background(), f.options(false))
	if err != nil {
		t.Fatal(err)
	}
	if len(f.stages(t)) != 0 {
		t.Fatalf("an undisturbed builder left its frames: %v", f.stages(t))
	}
	if err := os.Remove(filepath.Join(f.packs, PackName("gen1", want.SHA256))); err != nil {
		t.Fatal(err)
	}

	f.killedAt(t, f.options(false))
	// Frames 0 and 1 can only come from the kept copies now.
	for i := range 1023 {
		if err := os.Rename(f.source(i), f.source(i)+".away"); err != nil {
			t.Fatal(err)
		}
	}
	got, err := BuildPack(context.Background(), f.options(true))
	if err != nil {
		t.Fatalf("a builder taking the frames over read their files again: %v", err)
	}
	if *got != *want {
		t.Errorf("resumed pack %+v, undisturbed %+v", *got, *want)
	}
	if _, err := os.Stat(filepath.Join(f.packs, PackName("gen1", want.SHA256))); err != nil {
		t.Error(err)
	}
	if s := f.stages(t); len(s) != 0 {
		t.Errorf("the staging directory stays after the pack is in place: %v", s)
	}
}

// A kept frame that does not hash to its name (cut short, holes, other
// bytes) is not used, nor any frame after it; frames of another plan, or
// those Adopt refuses, are not taken over.
func TestBuildPackRefusesBadFrames(t *testing.T) {
	f := newFramesFixture(t, 1300)
	want, err := BuildPack(context.Background(), f.options(false))
	if err != nil {
		t.Fatal(err)
	}
	packPath := filepath.Join(f.packs, PackName("gen1", want.SHA256))
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, frame0, frame1 string)
	}{
		{"frame 1 cut short", func(t *testing.T, _, frame1 string) {
			fi, _ := os.Stat(frame1)
			if err := os.Truncate(frame1, fi.Size()/2); err != nil {
				t.Fatal(err)
			}
		}},
		{"frame 1 full length with a hole", func(t *testing.T, _, frame1 string) {
			data, _ := os.ReadFile(frame1)
			clear(data[len(data)/3 : len(data)/2])
			if err := os.WriteFile(frame1, data, 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{"frame 0 is frame 1's bytes", func(t *testing.T, frame0, frame1 string) {
			data, _ := os.ReadFile(frame1)
			if err := os.WriteFile(frame0, data, 0o644); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			os.Remove(packPath)
			f.killedAt(t, f.options(false))
			stage := f.stages(t)[0]
			ents, _ := os.ReadDir(stage)
			tc.damage(t, filepath.Join(stage, ents[0].Name()), filepath.Join(stage, ents[1].Name()))
			got, err := BuildPack(context.Background(), f.options(true))
			if err != nil {
				t.Fatal(err)
			}
			if *got != *want {
				t.Errorf("pack %+v, undisturbed %+v: a damaged frame was used", *got, *want)
			}
		})
	}

	t.Run("another plan", func(t *testing.T) {
		os.Remove(packPath)
		f.killedAt(t, f.options(false))
		o := f.options(true)
		o.Threshold = 1 << 20 // the same files, another plan
		if _, err := BuildPack(context.Background(), o); err != nil {
			t.Fatal(err)
		}
		if len(f.stages(t)) != 1 {
			t.Errorf("frames of another plan were taken over: %v", f.stages(t))
		}
	})
	t.Run("Adopt refuses", func(t *testing.T) {
		for _, s := range f.stages(t) {
			os.RemoveAll(s)
		}
		os.Remove(packPath)
		f.killedAt(t, f.options(false))
		for i := range 1023 {
			if err := os.Rename(f.source(i), f.source(i)+".away"); err != nil {
				t.Fatal(err)
			}
		}
		defer func() {
			for i := range 1023 {
				os.Rename(f.source(i)+".away", f.source(i))
			}
		}()
		if _, err := BuildPack(context.Background(), f.options(false)); err == nil {
			t.Error("frames were taken over with no Adopt")
		}
	})
}

// A builder killed after its last frame (a partial one) and before the
// pack took its name leaves every frame; the next one keeps them all and
// writes the same pack. It used to cut the kept entries at a whole number
// of frames past the plan's end and panic.
func TestBuildPackKeepsEveryFrame(t *testing.T) {
	for _, n := range []int{300, 1300} {
		t.Run(fmt.Sprint(n, " files"), func(t *testing.T) {
			f := newFramesFixture(t, n)
			want, err := BuildPack(context.Background(), f.options(false))
			if err != nil {
				t.Fatal(err)
			}
			packPath := filepath.Join(f.packs, PackName("gen1", want.SHA256))
			// The pack cannot take its name: a non-empty directory holds it.
			if err := os.Remove(packPath); err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(filepath.Join(packPath, "x"), 0o755); err != nil {
				t.Fatal(err)
			}
			if _, err := BuildPack(context.Background(), f.options(false)); err == nil {
				t.Fatal("a pack took a name a directory holds")
			}
			if len(f.stages(t)) != 1 {
				t.Fatalf("the failed builder left %d staging directories, want 1", len(f.stages(t)))
			}
			if err := os.RemoveAll(packPath); err != nil {
				t.Fatal(err)
			}
			got, err := BuildPack(context.Background(), f.options(true))
			if err != nil {
				t.Fatal(err)
			}
			if *got != *want {
				t.Errorf("resumed pack %+v, undisturbed %+v", *got, *want)
			}
		})
	}
}
