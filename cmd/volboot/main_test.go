package main

import (
	"bytes"
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
