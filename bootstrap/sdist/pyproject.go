package sdist

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/pelletier/go-toml/v2"

	"github.com/volboot/volboot/bootstrap/pep508"
)

// LegacyBackend is PEP 517's backend for a project without a
// [build-system] build-backend: setuptools running its setup.py.
const LegacyBackend = "setuptools.build_meta:__legacy__"

// LegacyRequires are PEP 518's build requirements for a project without
// pyproject.toml (or without build-system.requires), as pip assumes them.
var LegacyRequires = []string{"setuptools>=40.8.0"}

// BuildSystem is what a project's pyproject.toml says about its build.
type BuildSystem struct {
	Requires    []pep508.Requirement
	Backend     string   // "module.path:object.path"
	BackendPath []string // in-tree backend directories, relative to the project
	// Legacy is true when the project has no pyproject.toml or no
	// [build-system] table: setup.py through LegacyBackend.
	Legacy bool
}

// ReadBuildSystem reads dir/pyproject.toml; a project without one (or
// without a [build-system] table) gets PEP 517's legacy defaults.
func ReadBuildSystem(dir string) (*BuildSystem, error) {
	data, err := os.ReadFile(filepath.Join(dir, "pyproject.toml"))
	if errors.Is(err, fs.ErrNotExist) {
		return legacy(), nil
	}
	if err != nil {
		return nil, err
	}
	return ParseBuildSystem(data)
}

func legacy() *BuildSystem {
	bs := &BuildSystem{Backend: LegacyBackend, Legacy: true}
	for _, r := range LegacyRequires {
		req, _ := pep508.ParseRequirement(r)
		bs.Requires = append(bs.Requires, req)
	}
	return bs
}

// ParseBuildSystem reads the [build-system] table of a pyproject.toml
// (PEP 517, PEP 518). Other tables are not looked at.
func ParseBuildSystem(data []byte) (*BuildSystem, error) {
	var doc struct {
		BuildSystem *struct {
			Requires    *[]string `toml:"requires"`
			Backend     *string   `toml:"build-backend"`
			BackendPath []string  `toml:"backend-path"`
		} `toml:"build-system"`
	}
	if err := toml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("pyproject.toml: %v", err)
	}
	if doc.BuildSystem == nil {
		return legacy(), nil
	}
	bs := &BuildSystem{}
	raw := doc.BuildSystem
	if raw.Requires == nil {
		// PEP 518 makes requires mandatory in [build-system]; pip and
		// build fall back to the legacy requirements.
		bs.Requires = legacy().Requires
	} else {
		for _, s := range *raw.Requires {
			req, err := pep508.ParseRequirement(s)
			if err != nil {
				return nil, fmt.Errorf("pyproject.toml: build-system.requires: %q: %v", s, err)
			}
			bs.Requires = append(bs.Requires, req)
		}
	}
	switch {
	case raw.Backend == nil:
		bs.Backend, bs.Legacy = LegacyBackend, true
	case !validBackend(*raw.Backend):
		return nil, fmt.Errorf("pyproject.toml: build-system.build-backend %q is not \"module.path\" or \"module.path:object.path\"", *raw.Backend)
	default:
		bs.Backend = *raw.Backend
	}
	for _, p := range raw.BackendPath {
		clean := path.Clean(strings.ReplaceAll(p, "\\", "/"))
		if p == "" || path.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, "../") || strings.ContainsRune(p, 0) {
			return nil, fmt.Errorf("pyproject.toml: build-system.backend-path %q is not a directory inside the project", p)
		}
		bs.BackendPath = append(bs.BackendPath, clean)
	}
	return bs, nil
}

// validBackend reports whether s is "a.b.c" or "a.b:c.d" with Python
// identifiers for parts.
func validBackend(s string) bool {
	mod, obj, hasObj := strings.Cut(s, ":")
	if !dotted(mod) {
		return false
	}
	return !hasObj || dotted(obj)
}

func dotted(s string) bool {
	if s == "" {
		return false
	}
	for _, part := range strings.Split(s, ".") {
		if !identifier(part) {
			return false
		}
	}
	return true
}

func identifier(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		if !(r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || i > 0 && r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}
