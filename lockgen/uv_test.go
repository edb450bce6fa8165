package lockgen

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/volboot/volboot/lockgen/lockgentest"
)

type finderFixture struct {
	bin, cache, log string
	finder          UVFinder
}

// newFinder makes a UVFinder over the fakes: uv on PATH reports pathVersion
// ("" for no uv on PATH), and pip installs a uv that reports 0.13.9.
func newFinder(t *testing.T, pathVersion string, env ...string) *finderFixture {
	t.Helper()
	f := &finderFixture{bin: lockgentest.Install(t, t.TempDir()), cache: filepath.Join(t.TempDir(), "volboot")}
	f.log = filepath.Join(t.TempDir(), "calls.jsonl")
	if pathVersion != "" {
		if err := os.WriteFile(filepath.Join(f.bin, "uv-version"), []byte("uv "+pathVersion+" (x86_64-unknown-linux-gnu)\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	f.finder = UVFinder{
		LookPath: func(name string) (string, error) {
			if pathVersion == "" {
				return "", errors.New("not found")
			}
			return filepath.Join(f.bin, name), nil
		},
		CacheDir: f.cache,
		Python:   filepath.Join(f.bin, "python3"),
		Env:      append(append(os.Environ(), lockgentest.EnvLog+"="+f.log), env...),
		Runner:   ExecRunner{},
		Log:      zap.NewNop(),
	}
	return f
}

func (f *finderFixture) pipCalls(t *testing.T) []lockgentest.Call {
	var out []lockgentest.Call
	for _, c := range lockgentest.ReadCalls(t, f.log) {
		if len(c.Args) > 0 && c.Args[0] == "python3" {
			out = append(out, c)
		}
	}
	return out
}

func TestFindUVOnPath(t *testing.T) {
	f := newFinder(t, UVVersion)
	uv, err := f.finder.Find(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if uv.Source != "PATH" || uv.Path != filepath.Join(f.bin, "uv") || uv.Version != UVVersion {
		t.Errorf("%+v", uv)
	}
	if n := len(f.pipCalls(t)); n != 0 {
		t.Errorf("pip ran %d times", n)
	}
}

func TestFindUVInstallsPinnedVersion(t *testing.T) {
	f := newFinder(t, "0.12.0")
	uv, err := f.finder.Find(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if uv.Source != "installed" || uv.Path != filepath.Join(f.cache, "uv-"+UVVersion, "bin", "uv") {
		t.Errorf("%+v", uv)
	}
	calls := f.pipCalls(t)
	if len(calls) != 1 {
		t.Fatalf("pip ran %d times", len(calls))
	}
	args := strings.Join(calls[0].Args, " ")
	for _, w := range []string{"-m pip install", "--require-hashes", "--only-binary=:all:", "--no-deps", "--target"} {
		if !strings.Contains(args, w) {
			t.Errorf("pip %s: missing %s", args, w)
		}
	}
	// The x86_64 manylinux wheel of uv 0.13.9, as PyPI lists it.
	if !strings.HasPrefix(calls[0].In, "uv==0.13.9 ") || !strings.Contains(calls[0].In, "--hash=sha256:d7f459fe4fd247d830351c75686d3996ace3c6f3f728eb0e85a30b7ada0cef19") {
		t.Errorf("requirements: %s", calls[0].In)
	}

	// Then the cached copy is used, checked against its RECORD.
	uv, err = f.finder.Find(context.Background())
	if err != nil || uv.Source != "cache" {
		t.Fatalf("%+v %v", uv, err)
	}
	if n := len(f.pipCalls(t)); n != 1 {
		t.Errorf("pip ran again")
	}

	// A damaged copy is installed again.
	bin, err := os.OpenFile(uv.Path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	bin.Write([]byte("x"))
	bin.Close()
	uv, err = f.finder.Find(context.Background())
	if err != nil || uv.Source != "installed" || len(f.pipCalls(t)) != 2 {
		t.Fatalf("%+v %v, %d pip runs", uv, err, len(f.pipCalls(t)))
	}
	if err := verifyInstalled(filepath.Dir(filepath.Dir(uv.Path))); err != nil {
		t.Error(err)
	}
}

func TestFindUVRefusesWrongInstall(t *testing.T) {
	f := newFinder(t, "", lockgentest.EnvPyVersion+"=uv 0.13.8")
	_, err := f.finder.Find(context.Background())
	if err == nil || !strings.Contains(err.Error(), "pip installed uv 0.13.8, want 0.13.9") {
		t.Fatalf("got %v", err)
	}
	if _, err := os.Stat(f.finder.Dir()); !os.IsNotExist(err) {
		t.Errorf("a wrong uv was kept in the cache: %v", err)
	}
}

func TestFindUVPipFails(t *testing.T) {
	f := newFinder(t, "", lockgentest.EnvPyFail+"=ERROR: Could not find a version that satisfies the requirement uv==0.13.9")
	_, err := f.finder.Find(context.Background())
	if err == nil || !strings.Contains(err.Error(), "Could not find a version") || !strings.Contains(err.Error(), "put uv 0.13.9 on PATH") {
		t.Fatalf("got %v", err)
	}
}

func TestFindUVExplicit(t *testing.T) {
	f := newFinder(t, "0.12.0")
	f.finder.Explicit = filepath.Join(f.bin, "uv")
	_, err := f.finder.Find(context.Background())
	if err == nil || !strings.Contains(err.Error(), "is uv 0.12.0") || !strings.Contains(err.Error(), "leave out --uv") {
		t.Fatalf("got %v", err)
	}
	os.WriteFile(filepath.Join(f.bin, "uv-version"), []byte("uv 0.13.9\n"), 0o644)
	uv, err := f.finder.Find(context.Background())
	if err != nil || uv.Source != "--uv" {
		t.Fatalf("%+v %v", uv, err)
	}
}

func TestParseUVVersion(t *testing.T) {
	for in, want := range map[string]string{
		"uv 0.13.9 (x86_64-unknown-linux-gnu)\n": "0.13.9",
		"uv 0.13.9":                              "0.13.9",
		"uv 0.13.9 (abc123 2026-11-30)\nmore":    "0.13.9",
		"uv 0.14.0+3 (dev)":                      "0.14.0+3",
		"ruff 0.13.9":                            "",
		"uv":                                     "",
		"uv not-a-version":                       "",
		"":                                       "",
	} {
		got, err := ParseUVVersion([]byte(in))
		if got != want || (want == "") != (err != nil) {
			t.Errorf("ParseUVVersion(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestParseRecord(t *testing.T) {
	sum := sha256.Sum256([]byte("uv"))
	b64 := base64.RawURLEncoding.EncodeToString(sum[:])
	rec := "../../bin/uv,sha256=" + b64 + ",2\n\"odd,name.py\",sha256=" + b64 + "=,2\nuv-0.13.9.dist-info/RECORD,,\n"
	es, err := parseRecord([]byte(rec))
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 3 || es[0].Path != "../../bin/uv" || !bytes.Equal(es[0].SHA256, sum[:]) || es[0].Size != 2 || es[1].Path != "odd,name.py" || es[2].SHA256 != nil || es[2].Size != -1 {
		t.Errorf("%+v", es)
	}
	for _, bad := range []string{"a,b\n", "a,sha256,1\n", "a,sha256=!!,1\n", "a,,x\n", "a,sha256=" + b64[:10] + ",1\n", ",,\n"} {
		if _, err := parseRecord([]byte(bad)); err == nil {
			t.Errorf("parseRecord(%q) accepted", bad)
		}
	}
}

func FuzzParseUVVersion(f *testing.F) {
	f.Add([]byte("uv 0.13.9 (x86_64-unknown-linux-gnu)\n"))
	f.Add([]byte("uv 1!2.0rc1+x"))
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := ParseUVVersion(data)
		if err == nil && (v == "" || strings.ContainsAny(v, " \t\n")) {
			t.Fatalf("version %q", v)
		}
	})
}

func FuzzParseRecord(f *testing.F) {
	f.Add([]byte("../../bin/uv,sha256=tzrN9zuWw6yeVtL6kzQns-5qkB48zmuh4-yz-Ryg2Go,38409000\nuv-0.13.9.dist-info/RECORD,,\n"))
	f.Add([]byte("\"a,b\",,\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		es, err := parseRecord(data)
		if err != nil {
			return
		}
		for _, e := range es {
			if e.Path == "" || (e.SHA256 != nil && len(e.SHA256) != 32) || e.Size < -1 {
				t.Fatalf("entry %+v", e)
			}
		}
	})
}
