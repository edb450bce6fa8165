package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/volboot/volboot/manifests"
)

// result is what one app.main call did.
type result struct {
	code           int
	stdout, stderr string
}

// runApp runs the command line in-process with env as the whole
// environment (nothing inherited), in the current directory.
func runApp(t *testing.T, env map[string]string, args ...string) result {
	t.Helper()
	errf, err := os.CreateTemp(t.TempDir(), "stderr")
	if err != nil {
		t.Fatal(err)
	}
	defer errf.Close()
	var out bytes.Buffer
	a := &app{env: func(k string) string { return env[k] }, stdout: &out, stderr: errf}
	code := a.main(args)
	errb, err := os.ReadFile(errf.Name())
	if err != nil {
		t.Fatal(err)
	}
	return result{code: code, stdout: out.String(), stderr: string(errb)}
}

func TestCompletionScriptsParse(t *testing.T) {
	for shell, check := range map[string][]string{
		"bash": {"-n"},
		"zsh":  {"-n"},
		"fish": {"--no-execute"},
	} {
		t.Run(shell, func(t *testing.T) {
			r := runApp(t, nil, "completion", shell)
			if r.code != 0 || !strings.Contains(r.stdout, "volboot") {
				t.Fatalf("volboot completion %s: exit %d\nstdout:\n%.500s\nstderr:\n%s", shell, r.code, r.stdout, r.stderr)
			}
			bin, err := exec.LookPath(shell)
			if err != nil {
				t.Skipf("%s is not installed, so its completion script cannot be parsed here (CI installs it)", shell)
			}
			script := filepath.Join(t.TempDir(), "volboot."+shell)
			if err := os.WriteFile(script, []byte(r.stdout), 0o644); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command(bin, append(check, script)...).CombinedOutput(); err != nil {
				t.Fatalf("%s %v rejects the completion script: %v\n%s", shell, check, err, out)
			}
		})
	}
}

func TestVersionFlagMatchesVersionCommand(t *testing.T) {
	flag := runApp(t, nil, "--version")
	cmd := runApp(t, nil, "version")
	if flag.code != 0 || cmd.code != 0 || flag.stdout != cmd.stdout || !strings.HasPrefix(flag.stdout, "volboot ") {
		t.Fatalf("--version: exit %d %q %s\nversion: exit %d %q %s", flag.code, flag.stdout, flag.stderr, cmd.code, cmd.stdout, cmd.stderr)
	}
	// -v stays --verbose.
	if r := runApp(t, nil, "-v", "version"); r.code != 0 || r.stdout != cmd.stdout {
		t.Fatalf("-v version: exit %d %q %s", r.code, r.stdout, r.stderr)
	}
}

func TestHelpHasExamples(t *testing.T) {
	for _, cmd := range []string{"run", "sync", "repair"} {
		r := runApp(t, nil, cmd, "--help")
		if r.code != 0 {
			t.Fatalf("%s --help: exit %d\n%s", cmd, r.code, r.stderr)
		}
		_, examples, ok := strings.Cut(r.stdout, "Examples:\n")
		if !ok || !strings.Contains(examples, "volboot "+cmd+" ") {
			t.Errorf("%s --help has no example of volboot %s:\n%s", cmd, cmd, r.stdout)
		}
	}
}

func TestEmbeddedManifestsAreListed(t *testing.T) {
	names := manifests.EmbeddedNames()
	if len(names) == 0 {
		t.Fatal("no embedded manifests")
	}
	help := runApp(t, nil, "manifest", "--help")
	var flagLine string
	for _, l := range strings.Split(runApp(t, nil, "--help").stdout, "\n") {
		if strings.Contains(l, "--manifest") {
			flagLine = l
		}
	}
	unknown := runApp(t, nil, "status", "--manifest", "embedded:nope.toml")
	if unknown.code != 2 {
		t.Errorf("an unknown embedded manifest: exit %d, want 2\n%s", unknown.code, unknown.stderr)
	}
	for _, n := range names {
		if !strings.Contains(help.stdout, manifests.EmbeddedPrefix+n) {
			t.Errorf("manifest --help does not list embedded:%s:\n%s", n, help.stdout)
		}
		if !strings.Contains(flagLine, n) {
			t.Errorf("the --manifest flag's usage does not name %s: %q", n, flagLine)
		}
		if !strings.Contains(unknown.stderr, n) {
			t.Errorf("the error for an unknown embedded manifest does not name %s:\n%s", n, unknown.stderr)
		}
	}
}

// writeManifest writes a manifest with a lock of no packages into a new
// directory and returns the manifest's path; lock false leaves the lock out.
func writeManifest(t *testing.T, lock bool) string {
	t.Helper()
	dir := t.TempDir()
	m := "name = \"t\"\n[lock]\npath = \"pylock.toml\"\n[[group]]\nname = \"core\"\nrequirements = [\"alpha\"]\n"
	if err := os.WriteFile(filepath.Join(dir, "volboot.toml"), []byte(m), 0o644); err != nil {
		t.Fatal(err)
	}
	if lock {
		l := "lock-version = \"1.0\"\nrequires-python = \">=3.8\"\ncreated-by = \"test\"\n"
		if err := os.WriteFile(filepath.Join(dir, "pylock.toml"), []byte(l), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, "volboot.toml")
}

// testEnv is the environment the commands that act on a volume need.
func testEnv() map[string]string {
	return map[string]string{"PATH": os.Getenv("PATH"), "HOME": os.Getenv("HOME"), "VOLBOOT_LOG_FORMAT": "console"}
}

// Under --json, a failure is one JSON object on stdout too, with the exit
// code the process exits with.
func TestJSONErrors(t *testing.T) {
	noLock := writeManifest(t, false)
	for name, args := range map[string][]string{
		"status without its lock": {"status", "--json", "--manifest", noLock},
		"gc without its lock":     {"gc", "--json", "--dry-run", "--manifest", noLock},
		"status, a bad flag":      {"status", "--nope", "--json"},
		"gc, a bad flag value":    {"gc", "--json", "--jobs", "many"},
	} {
		t.Run(name, func(t *testing.T) {
			r := runApp(t, testEnv(), append(args, "--volume", t.TempDir())...)
			var got struct {
				Error    *string `json:"error"`
				ExitCode *int    `json:"exit_code"`
			}
			dec := json.NewDecoder(strings.NewReader(r.stdout))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&got); err != nil || dec.More() {
				t.Fatalf("exit %d; stdout is not one JSON object (%v):\n%s\nstderr:\n%s", r.code, err, r.stdout, r.stderr)
			}
			if r.code != 2 || got.ExitCode == nil || *got.ExitCode != r.code || got.Error == nil || *got.Error == "" {
				t.Errorf("exit %d, stdout:\n%s", r.code, r.stdout)
			}
			// The line on stderr stays: it is the exit code's reason for
			// whoever reads the logs.
			if !strings.Contains(r.stderr, *got.Error) {
				t.Errorf("stderr does not say %q:\n%s", *got.Error, r.stderr)
			}
		})
	}
	// Without --json the error is only on stderr.
	if r := runApp(t, testEnv(), "status", "--manifest", noLock, "--volume", t.TempDir()); r.code != 2 || r.stdout != "" {
		t.Errorf("status without --json: exit %d, stdout %q", r.code, r.stdout)
	}
}

// gc --json on a volume with nothing to remove prints empty lists, not
// null.
func TestGCJSONHasNoNulls(t *testing.T) {
	m := writeManifest(t, true)
	for _, args := range [][]string{{"--dry-run"}, nil} {
		r := runApp(t, testEnv(), append([]string{"gc", "--json", "--manifest", m, "--volume", t.TempDir()}, args...)...)
		if r.code != 0 {
			t.Fatalf("gc --json %v: exit %d\n%s%s", args, r.code, r.stdout, r.stderr)
		}
		var out map[string]json.RawMessage
		if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
			t.Fatalf("gc --json %v: %v\n%s", args, err, r.stdout)
		}
		for _, k := range []string{"removed", "kept_generations"} {
			if string(out[k]) != "[]" {
				t.Errorf("gc --json %v: %q is %s, want []", args, k, out[k])
			}
		}
		for k, v := range out {
			if string(v) == "null" {
				t.Errorf("gc --json %v: %q is null", args, k)
			}
		}
	}
}

// A failed command says why once: one line on stderr, plain with the
// console logs, a JSON log record carrying the exit code with the JSON ones.
func TestFatalErrorOnce(t *testing.T) {
	m := writeManifest(t, true)
	noLock := writeManifest(t, false)
	const python = "/nonexistent/python3"
	for name, c := range map[string]struct {
		args []string
		code int
		says string // what the one line says, and no other line
	}{
		"run, bootstrap fails":  {[]string{"run", "--manifest", m, "--python", python, "--", "true"}, 1, python},
		"sync, bootstrap fails": {[]string{"sync", "--manifest", m, "--python", python}, 1, python},
		"status, no lock":       {[]string{"status", "--manifest", noLock}, 2, "does not exist"},
		"a bad flag":            {[]string{"sync", "--jobs", "many"}, 2, "many"},
	} {
		for _, format := range []string{"console", "json"} {
			t.Run(name+"/"+format, func(t *testing.T) {
				args := append([]string{"--log-format", format, "--volume", t.TempDir()}, c.args...)
				r := runApp(t, testEnv(), args...)
				if r.code != c.code {
					t.Fatalf("exit %d, want %d\n%s", r.code, c.code, r.stderr)
				}
				var lines []string
				for _, l := range strings.Split(r.stderr, "\n") {
					if strings.Contains(l, c.says) {
						lines = append(lines, l)
					}
				}
				if len(lines) != 1 {
					t.Fatalf("%d lines say %q, want 1:\n%s", len(lines), c.says, r.stderr)
				}
				if format == "console" {
					if !strings.HasPrefix(lines[0], "volboot: ") {
						t.Errorf("the line is not volboot: <error>: %s", lines[0])
					}
					return
				}
				var rec struct {
					Level    string `json:"level"`
					Logger   string `json:"logger"`
					Msg      string `json:"msg"`
					ExitCode *int   `json:"exit_code"`
				}
				if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil {
					t.Fatalf("with --log-format json the line is not JSON (%v): %s", err, lines[0])
				}
				if rec.Level != "error" || rec.Logger != "volboot" || rec.ExitCode == nil || *rec.ExitCode != r.code || !strings.Contains(rec.Msg, c.says) {
					t.Errorf("record %+v from %s", rec, lines[0])
				}
			})
		}
	}
}
