package venv_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/volboot/volboot/bootstrap/interp"
	"github.com/volboot/volboot/bootstrap/venv"
	"github.com/volboot/volboot/bootstrap/wheel"
	"github.com/volboot/volboot/bootstrap/wheel/wheeltest"
)

var (
	probeOnce sync.Once
	probed    *interp.Info
	probeErr  error
)

// python probes the machine's real python3 once per test binary.
func python(t *testing.T) *interp.Info {
	t.Helper()
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 not on PATH: these tests compare against the real interpreter and pip")
	}
	probeOnce.Do(func() {
		dir, err := os.MkdirTemp("", "volboot-probe")
		if err != nil {
			probeErr = err
			return
		}
		defer os.RemoveAll(dir)
		probed, probeErr = interp.Probe(context.Background(), "python3", interp.Cache{Dir: dir, Write: true}, nil)
	})
	if probeErr != nil {
		t.Fatal(probeErr)
	}
	return probed
}

// wheelFile is a wheel on disk with its digest.
type wheelFile struct {
	path, filename, sha string
	requested           bool
}

func fileWheel(t *testing.T, p string) wheelFile {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Skipf("wheel %s is not on this machine: %v", p, err)
	}
	s := sha256.Sum256(b)
	return wheelFile{path: p, filename: filepath.Base(p), sha: hex.EncodeToString(s[:]), requested: true}
}

func specWheel(t *testing.T, dir string, s wheeltest.Spec) wheelFile {
	t.Helper()
	p, sha, err := wheeltest.Write(dir, s)
	if err != nil {
		t.Fatal(err)
	}
	return wheelFile{path: p, filename: s.Filename(), sha: sha, requested: true}
}

// install unpacks wheels into <volume>/.volboot/store and builds generation
// id from them; it returns the generation directory.
func install(t *testing.T, info *interp.Info, volume, id string, ws []wheelFile, mode venv.LinkMode) string {
	t.Helper()
	dir, err := installErr(info, volume, id, ws, mode)
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func installErr(info *interp.Info, volume, id string, ws []wheelFile, mode venv.LinkMode) (string, error) {
	st := &wheel.Store{Dir: venv.StoreDir(volume),
		Compiler: &wheel.Compiler{Python: info.Executable, CacheTag: info.CacheTag, Workers: 2}}
	var wheels []venv.Wheel
	for _, w := range ws {
		wheels = append(wheels, venv.Wheel{Source: wheel.Source{Path: w.path, Filename: w.filename, SHA256: w.sha}, Requested: w.requested})
	}
	b := &venv.Builder{Python: info, Mode: mode, Creator: "volboot test"}
	dir := venv.EnvDir(volume, id)
	_, err := venv.Install(context.Background(), st, b, dir, wheels)
	return dir, err
}

// pipInstall makes the oracle: python -m venv, then pip (run from its own
// wheel) installs the same files with --no-deps --no-index.
func pipInstall(t *testing.T, info *interp.Info, dir, pipWheel string, ws []wheelFile) {
	t.Helper()
	run(t, "", info.Executable, "-m", "venv", "--without-pip", dir)
	args := []string{filepath.Join(pipWheel, "pip"), "install", "--no-deps", "--no-index", "--no-cache-dir",
		"--disable-pip-version-check", "--no-warn-script-location", "-q"}
	for _, w := range ws {
		// pip wants the real filename; copy under it.
		p := filepath.Join(t.TempDir(), w.filename)
		b, err := os.ReadFile(w.path)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(p, b, 0o644)
		args = append(args, p)
	}
	run(t, "", filepath.Join(dir, "bin", "python"), args...)
}

func run(t *testing.T, dir, name string, args ...string) string {
	t.Helper()
	out, err := runErr(dir, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func runErr(dir, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	var env []string
	for _, kv := range os.Environ() {
		// The test must see the environment as a fresh shell would; pyenv's
		// and the caller's Python settings would leak into both sides.
		if strings.HasPrefix(kv, "PYTHON") || strings.HasPrefix(kv, "VIRTUAL_ENV=") || strings.HasPrefix(kv, "PIP_") {
			continue
		}
		env = append(env, kv)
	}
	cmd.Env = append(env, "PIP_DISABLE_PIP_VERSION_CHECK=1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// fileSet lists the files and symlinks under root, relative, sorted,
// leaving out what legitimately differs between volboot and pip.
func fileSet(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		base := filepath.Base(rel)
		switch {
		case rel == venv.CompleteName, rel == "pyvenv.cfg", strings.HasPrefix(rel, "bin/activate"), base == "Activate.ps1",
			base == "direct_url.json":
			return nil
		}
		out = append(out, rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

func diff(a, b []string) (onlyA, onlyB []string) {
	ma := map[string]bool{}
	for _, x := range a {
		ma[x] = true
	}
	mb := map[string]bool{}
	for _, x := range b {
		mb[x] = true
		if !ma[x] {
			onlyB = append(onlyB, x)
		}
	}
	for _, x := range a {
		if !mb[x] {
			onlyA = append(onlyA, x)
		}
	}
	return
}

func short(xs []string) string {
	if len(xs) > 20 {
		return fmt.Sprint(xs[:20], fmt.Sprintf(" ... and %d more", len(xs)-20))
	}
	return fmt.Sprint(xs)
}
