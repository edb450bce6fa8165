package sdist

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBuildSystem(t *testing.T) {
	dir := t.TempDir()
	bs, err := ReadBuildSystem(dir)
	if err != nil || !bs.Legacy || bs.Backend != LegacyBackend || len(bs.Requires) != 1 || bs.Requires[0].Name != "setuptools" {
		t.Fatalf("no pyproject.toml: %+v %v", bs, err)
	}
	for _, c := range []struct {
		doc     string
		backend string
		legacy  bool
		reqs    int
		path    []string
		err     string
	}{
		{"[tool.black]\nline-length = 100\n", LegacyBackend, true, 1, nil, ""},
		{"[build-system]\nrequires = [\"setuptools>=61\", \"wheel\"]\n", LegacyBackend, true, 2, nil, ""},
		{"[build-system]\nbuild-backend = \"setuptools.build_meta\"\n", "setuptools.build_meta", false, 1, nil, ""},
		{"[build-system]\nrequires = []\nbuild-backend = \"backend:Obj.attr\"\nbackend-path = [\"./_build\", \"tools\"]\n", "backend:Obj.attr", false, 0, []string{"_build", "tools"}, ""},
		{"[build-system]\nrequires = [\"hatchling\"]\nbuild-backend = \"hatchling.build\"\n", "hatchling.build", false, 1, nil, ""},
		{"[build-system\n", "", false, 0, nil, "pyproject.toml"},
		{"[build-system]\nrequires = \"setuptools\"\n", "", false, 0, nil, "pyproject.toml"},
		{"[build-system]\nrequires = [\"not a requirement!\"]\n", "", false, 0, nil, "build-system.requires"},
		{"[build-system]\nbuild-backend = \"os; rm -rf /\"\n", "", false, 0, nil, "build-backend"},
		{"[build-system]\nbuild-backend = \"1mod\"\n", "", false, 0, nil, "build-backend"},
		{"[build-system]\nbuild-backend = \"a:\"\n", "", false, 0, nil, "build-backend"},
		{"[build-system]\nbuild-backend = \"a\"\nbackend-path = [\"../outside\"]\n", "", false, 0, nil, "backend-path"},
		{"[build-system]\nbuild-backend = \"a\"\nbackend-path = [\"/abs\"]\n", "", false, 0, nil, "backend-path"},
		{"[build-system]\nbuild-backend = \"a\"\nbackend-path = [\"a/../..\"]\n", "", false, 0, nil, "backend-path"},
	} {
		if err := os.WriteFile(filepath.Join(dir, "pyproject.toml"), []byte(c.doc), 0o644); err != nil {
			t.Fatal(err)
		}
		bs, err := ReadBuildSystem(dir)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%q: want an error with %q, got %v", c.doc, c.err, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", c.doc, err)
			continue
		}
		if bs.Backend != c.backend || bs.Legacy != c.legacy || len(bs.Requires) != c.reqs || strings.Join(bs.BackendPath, ",") != strings.Join(c.path, ",") {
			t.Errorf("%q: %+v", c.doc, bs)
		}
	}
}

func FuzzParseBuildSystem(f *testing.F) {
	f.Add([]byte("[build-system]\nrequires = [\"setuptools>=61\", \"wheel; python_version<'3'\"]\nbuild-backend = \"setuptools.build_meta:__legacy__\"\nbackend-path = [\"x\"]\n"))
	f.Add([]byte("[project]\nname = \"x\"\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		bs, err := ParseBuildSystem(data)
		if err != nil {
			return
		}
		if !validBackend(bs.Backend) {
			t.Fatalf("accepted backend %q", bs.Backend)
		}
		for _, p := range bs.BackendPath {
			if p == "" || strings.HasPrefix(p, "/") || p == ".." || strings.HasPrefix(p, "../") {
				t.Fatalf("accepted backend-path %q", p)
			}
		}
	})
}
