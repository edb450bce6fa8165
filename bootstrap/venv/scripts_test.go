package venv

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/volboot/volboot/bootstrap/wheel"
)

func TestScriptsForVersionsPipLikePip(t *testing.T) {
	eps := []wheel.EntryPoint{
		{Name: "pip", Module: "pip._internal.cli.main", Attr: "main"},
		{Name: "pip3", Module: "pip._internal.cli.main", Attr: "main"},
		{Name: "pip3.10", Module: "pip._internal.cli.main", Attr: "main"},
		{Name: "easy_install", Module: "setuptools.command.easy_install", Attr: "main"},
		{Name: "easy_install-3.9", Module: "setuptools.command.easy_install", Attr: "main"},
		{Name: "pipx", Module: "pipx.main", Attr: "cli"},
		{Name: "gui", Module: "g", Attr: "main", GUI: true},
	}
	var names []string
	for _, ep := range scriptsFor(eps, 3, 11) {
		names = append(names, ep.Name)
	}
	if got := strings.Join(names, " "); got != "pipx gui pip pip3 pip3.11 easy_install easy_install-3.11" {
		t.Fatalf("scripts %s", got)
	}
	// Without a plain "pip" entry point nothing is renamed.
	if got := scriptsFor([]wheel.EntryPoint{{Name: "pip3", Module: "m", Attr: "f"}}, 3, 11); len(got) != 1 || got[0].Name != "pip3" {
		t.Fatalf("%+v", got)
	}
}

func TestRewriteScript(t *testing.T) {
	dir := t.TempDir()
	cases := map[string]string{
		"#!python\nprint(1)\n":          "#!/bin/sh\n'''exec' \"$(dirname -- \"$(realpath -- \"$0\")\")/python\" \"$0\" \"$@\"\n' '''\nprint(1)\n",
		"#!pythonw -u -E\r\nprint(2)\n": "#!/bin/sh\n'''exec' \"$(dirname -- \"$(realpath -- \"$0\")\")/python\" '-u' '-E' \"$0\" \"$@\"\n' '''\nprint(2)\n",
	}
	for in, want := range cases {
		p := filepath.Join(dir, "s")
		os.WriteFile(p, []byte(in), 0o755)
		got, ok, err := rewriteScript(p)
		if err != nil || !ok || string(got) != want {
			t.Errorf("rewrite %q = %q %v %v, want %q", in, got, ok, err, want)
		}
	}
	for _, in := range []string{"#!/bin/sh\necho\n", "#!pyth", ""} {
		p := filepath.Join(dir, "s")
		os.WriteFile(p, []byte(in), 0o755)
		if _, ok, err := rewriteScript(p); ok || err != nil {
			t.Errorf("rewrote %q (%v)", in, err)
		}
	}
}

func TestLauncher(t *testing.T) {
	got := string(launcher(wheel.EntryPoint{Name: "x", Module: "a.b", Attr: "Cls.run"}))
	for _, want := range []string{"#!/bin/sh\n'''exec' ", "from a.b import Cls\n", "sys.exit(Cls.run())\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("launcher lacks %q:\n%s", want, got)
		}
	}
	got = string(launcher(wheel.EntryPoint{Name: "x", Module: "a.b"}))
	if !strings.Contains(got, "import a.b as _entry\n") || !strings.Contains(got, "sys.exit(_entry())") {
		t.Errorf("attr-less launcher:\n%s", got)
	}
}

func FuzzRewriteScript(f *testing.F) {
	f.Add([]byte("#!python -u\nprint(1)\n"))
	f.Add([]byte("#!pythonw\n"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(dir, "s")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Skip()
		}
		out, ok, err := rewriteScript(p)
		if err != nil {
			t.Fatal(err)
		}
		if ok && !strings.HasPrefix(string(out), "#!/bin/sh\n'''exec' ") {
			t.Fatalf("bad header %q", out)
		}
		if ok && !strings.HasSuffix(strings.SplitN(string(out), "\n", 3)[1], ` "$0" "$@"`) {
			t.Fatalf("exec line %q", out)
		}
	})
}
