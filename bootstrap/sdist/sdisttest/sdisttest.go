// Package sdisttest writes source distributions for tests: plain setup.py
// projects (as the F5 stack's three sdists are), and ones whose build
// fails, needs a C compiler, or takes its time. Output is deterministic:
// the same Spec gives the same bytes, so a test's sha256es do not change
// between runs.
package sdisttest

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// File is one file of the project, relative to its top directory.
type File struct {
	Name string
	Data string
	Mode fs.FileMode // 0 means 0644
}

// Spec describes an sdist: a directory <name>-<version>/ holding PKG-INFO,
// setup.py (SetupPy, or one that packages Module), the module's
// __init__.py, and Files.
type Spec struct {
	Name, Version string
	// SetupPy replaces the generated setup.py.
	SetupPy string
	// Prelude is Python run at the top of the generated setup.py, before
	// setup() (count builds, sleep, fail).
	Prelude string
	// Extension adds a C extension module (ext_modules) named
	// <module>._speedups, which needs a C compiler to build.
	Extension bool
	// PyProject, when set, is written as pyproject.toml.
	PyProject string
	Files     []File
	// Zip writes a .zip sdist instead of PEP 625's .tar.gz.
	Zip bool
	// Prefix, when set, replaces the top directory's name (a malformed sdist).
	Prefix string
}

// Module is the importable package the generated setup.py installs.
func (s Spec) Module() string {
	return strings.NewReplacer("-", "_", ".", "_").Replace(strings.ToLower(s.Name))
}

// Filename is the sdist's file name, in PEP 625's normalized spelling.
func (s Spec) Filename() string {
	ext := ".tar.gz"
	if s.Zip {
		ext = ".zip"
	}
	return s.Module() + "-" + s.Version + ext
}

// Sdist is one written sdist.
type Sdist struct {
	Spec     Spec
	Filename string
	Path     string
	SHA256   string
	Size     int64
}

// files lists the project's files, sorted.
func (s Spec) files() []File {
	mod := s.Module()
	top := s.Prefix
	if top == "" {
		top = mod + "-" + s.Version
	}
	setup := s.SetupPy
	if setup == "" {
		var b strings.Builder
		b.WriteString("import os, sys, time\n")
		b.WriteString(s.Prelude)
		b.WriteString("\nfrom setuptools import setup")
		if s.Extension {
			b.WriteString(", Extension")
		}
		fmt.Fprintf(&b, "\nsetup(name=%q, version=%q, packages=[%q]", s.Name, s.Version, mod)
		if s.Extension {
			fmt.Fprintf(&b, ", ext_modules=[Extension(%q, [%q])]", mod+"._speedups", mod+"/_speedups.c")
		}
		b.WriteString(")\n")
		setup = b.String()
	}
	files := []File{
		{Name: "PKG-INFO", Data: fmt.Sprintf("Metadata-Version: 2.1\nName: %s\nVersion: %s\nSummary: a test sdist\n", s.Name, s.Version)},
		{Name: "setup.py", Data: setup},
		{Name: mod + "/__init__.py", Data: fmt.Sprintf("NAME = %q\nVERSION = %q\n", s.Name, s.Version)},
	}
	if s.Extension {
		files = append(files, File{Name: mod + "/_speedups.c", Data: "#include <Python.h>\n" +
			"static struct PyModuleDef m = {PyModuleDef_HEAD_INIT, \"_speedups\", NULL, -1, NULL};\n" +
			"PyMODINIT_FUNC PyInit__speedups(void) { return PyModule_Create(&m); }\n"})
	}
	if s.PyProject != "" {
		files = append(files, File{Name: "pyproject.toml", Data: s.PyProject})
	}
	files = append(files, s.Files...)
	for i := range files {
		files[i].Name = top + "/" + files[i].Name
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Name < files[j].Name })
	return files
}

// mtime is every member's modification time: fixed, for stable bytes.
var mtime = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)

// WriteTo writes the sdist's bytes to w.
func WriteTo(w io.Writer, s Spec) error {
	files := s.files()
	if s.Zip {
		zw := zip.NewWriter(w)
		for _, f := range files {
			h := &zip.FileHeader{Name: f.Name, Method: zip.Deflate, Modified: mtime}
			h.SetMode(mode(f))
			fw, err := zw.CreateHeader(h)
			if err != nil {
				return err
			}
			if _, err := io.WriteString(fw, f.Data); err != nil {
				return err
			}
		}
		return zw.Close()
	}
	gz, err := gzip.NewWriterLevel(w, gzip.BestSpeed)
	if err != nil {
		return err
	}
	gz.ModTime = mtime
	tw := tar.NewWriter(gz)
	dirs := map[string]bool{}
	for _, f := range files {
		// Directories first, as sdists list them.
		for d := filepath.Dir(f.Name); d != "." && !dirs[d]; d = filepath.Dir(d) {
			dirs[d] = true
		}
	}
	var dirList []string
	for d := range dirs {
		dirList = append(dirList, d)
	}
	sort.Strings(dirList)
	for _, d := range dirList {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: mtime, Format: tar.FormatPAX}); err != nil {
			return err
		}
	}
	for _, f := range files {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.Name, Mode: int64(mode(f)), Size: int64(len(f.Data)), ModTime: mtime, Format: tar.FormatPAX}); err != nil {
			return err
		}
		if _, err := io.WriteString(tw, f.Data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return gz.Close()
}

func mode(f File) fs.FileMode {
	if f.Mode == 0 {
		return 0o644
	}
	return f.Mode
}

// Write writes the sdist into dir.
func Write(dir string, s Spec) (Sdist, error) {
	var buf bytes.Buffer
	if err := WriteTo(&buf, s); err != nil {
		return Sdist{}, err
	}
	path := filepath.Join(dir, s.Filename())
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		return Sdist{}, err
	}
	sum := sha256.Sum256(buf.Bytes())
	return Sdist{Spec: s, Filename: s.Filename(), Path: path, SHA256: hex.EncodeToString(sum[:]), Size: int64(buf.Len())}, nil
}

// CountBuilds is a Prelude that appends a line to file each time setup.py
// makes a wheel (bdist_wheel: a PEP 517 build runs setup.py once more
// before, to ask for its build requirements), so a test can count the
// builds that really happened.
func CountBuilds(file string) string {
	return fmt.Sprintf("if 'bdist_wheel' in sys.argv:\n    with open(%q, 'a') as _f:\n        _f.write('build\\n')\n", file)
}

// Fail is a Prelude that fails the build with message.
func Fail(message string) string {
	return fmt.Sprintf("sys.stderr.write(%q + '\\n')\nraise SystemExit(1)\n", message)
}

// Sleep is a Prelude that writes a line to file (when set) and then sleeps
// for d: a build to kill midway.
func Sleep(file string, d time.Duration) string {
	var b strings.Builder
	if file != "" {
		fmt.Fprintf(&b, "with open(%q, 'a') as _f:\n    _f.write('sleeping %%d\\n' %% os.getpid())\n", file)
	}
	fmt.Fprintf(&b, "time.sleep(%g)\n", d.Seconds())
	return b.String()
}

// BackendWheels finds setuptools and wheel wheels on this machine that
// build sdists with the interpreter python, offline: setuptools from the
// interpreter's own ensurepip bundle when it has one (upstream's wheel,
// which works with any CPython of its range), else Debian's
// (python3-setuptools-whl), which is patched for Debian's own Python and
// fails on another ("AttributeError: install_layout"); wheel from Debian's
// python3-wheel-whl. The error says what is missing.
func BackendWheels(python string) (setuptools, wheel string, err error) {
	out, _ := exec.Command(python, "-c", "import ensurepip, os; print(os.path.join(os.path.dirname(ensurepip.__file__), '_bundled'))").Output()
	if dir := strings.TrimSpace(string(out)); dir != "" {
		if m, _ := filepath.Glob(filepath.Join(dir, "setuptools-*.whl")); len(m) > 0 {
			setuptools = m[0]
		}
	}
	if setuptools == "" {
		if m, _ := filepath.Glob("/usr/share/python-wheels/setuptools-*.whl"); len(m) > 0 {
			setuptools = m[0]
		}
	}
	if m, _ := filepath.Glob("/usr/share/python-wheels/wheel-*.whl"); len(m) > 0 {
		wheel = m[0]
	}
	switch {
	case setuptools == "":
		return "", "", fmt.Errorf("no setuptools wheel: %s bundles none, and Debian's is not in /usr/share/python-wheels (Debian package python3-setuptools-whl)", python)
	case wheel == "":
		return "", "", fmt.Errorf("Debian's wheel wheel is not in /usr/share/python-wheels (Debian package python3-wheel-whl)")
	}
	return setuptools, wheel, nil
}
