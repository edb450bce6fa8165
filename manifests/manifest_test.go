package manifests

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

const example = `name = "f5-tts-worker"
[python]
requires = ">=3.11,<3.13"
[lock]
path = "pylock.toml"
[[index]]
url = "https://pypi.org/simple"
mirrors = ["https://mirror.example/simple"]
[[group]]
name = "TTS"
required = true
requirements = ["torch==2.8.0", "torchaudio==2.8.0", "transformers==4.57.1", "f5-tts==1.1.22"]
when = { cuda = ">=12.8" }
[[group]]
name = "asr"
required = false
requirements = ["whisperx==3.7.4"]
[[group]]
name = "flash-attn"
required = false
requirements = ["flash-attn==2.8.3"]
when = { compute-capability = ">=8.0" }
[[model]]
repo = "SWivid/F5-TTS"
revision = "0123456789abcdef0123456789abcdef01234567"
files = ["F5TTS_v1_Base/model_1250000.safetensors", "F5TTS_v1_Base/vocab.txt"]
group = "tts"
[run]
command = ["python", "-u", "/app/handler.py"]
ready = "notify"
restart = "never"
stop-grace = "25s"
env = { F5_MODEL = "F5TTS_v1_Base" }
`

func TestParseDesignExample(t *testing.T) {
	m, err := Parse("volboot.toml", []byte(example))
	if err != nil {
		t.Fatal(err)
	}
	if m.Name != "f5-tts-worker" || len(m.Groups) != 3 || len(m.Models) != 1 || len(m.Indexes) != 1 {
		t.Fatalf("parsed %+v", m)
	}
	g, ok := m.Group("tts")
	if !ok || g.Name != "tts" || !g.Required || len(g.Requirements) != 4 || len(g.When) != 1 || g.When[0].Fact != "cuda" {
		t.Fatalf("group tts = %+v", g)
	}
	if asr, _ := m.Group("ASR"); asr.Required {
		t.Fatal("asr should be optional")
	}
	if m.Indexes[0].Name != "pypi.org" {
		t.Errorf("index name defaults to the host, got %q", m.Indexes[0].Name)
	}
	if m.Run.StopGrace != 25*time.Second || m.Run.Ready != "notify" || m.Run.ReadyTimeout != DefaultReadyTimeout || m.Run.HFOffline != "auto" {
		t.Errorf("run = %+v", m.Run)
	}
	if m.Models[0].RepoType != "model" || m.Models[0].Group != "tts" {
		t.Errorf("model = %+v", m.Models[0])
	}
	if got := m.LockFile(); got != "pylock.toml" {
		t.Errorf("LockFile = %q", got)
	}
}

// Each bad manifest must fail with file:line naming the line of the
// offending value and a word about the field.
func TestValidationNamesFileLine(t *testing.T) {
	for _, c := range []struct {
		name, replace, with string
		line                int
		want                string
	}{
		{"unknown key", `stop-grace = "25s"`, `stop-grace = "25s"` + "\nstopgrace = 1", 33, `unknown key "run.stopgrace"`},
		{"unknown group key", `required = false` + "\nrequirements = [\"whisperx", `required = false` + "\nrequirments = [\"x\"]\nrequirements = [\"whisperx", 17, `unknown key "group.requirments"`},
		{"bad specifier", `"torchaudio==2.8.0"`, `"torchaudio=>2.8.0"`, 12, "group[0].requirements[1]"},
		{"bad python", `requires = ">=3.11,<3.13"`, `requires = ">=3.11,<<3.13"`, 3, "python.requires"},
		{"dup group", `name = "asr"`, `name = "Tts"`, 15, "duplicate group"},
		{"model group", `group = "tts"`, `group = "nope"`, 27, `unknown group "nope"`},
		{"semver", `when = { compute-capability = ">=8.0" }`, `when = { compute-capability = ">=eight" }`, 22, "not a semver constraint"},
		{"when key", `when = { cuda = ">=12.8" }`, `when = { cuda = ">=12.8", vram = ">=24" }`, 13, `unknown condition "vram"`},
		{"duration", `stop-grace = "25s"`, `stop-grace = "25 seconds"`, 32, "not a duration"},
		{"empty command", `command = ["python", "-u", "/app/handler.py"]`, `command = []`, 29, "run.command: empty"},
		{"reserved env", `F5_MODEL = "F5TTS_v1_Base"`, `VIRTUAL_ENV = "/x"`, 33, "set by volboot"},
		{"http index", `url = "https://pypi.org/simple"`, `url = "http://pypi.org/simple"`, 7, "plain http"},
		{"ready", `ready = "notify"`, `ready = "sometimes"`, 30, "run.ready"},
		{"type", `required = true`, `required = "yes"`, 11, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			doc := strings.Replace(example, c.replace, c.with, 1)
			if doc == example {
				t.Fatalf("replacement %q not found", c.replace)
			}
			_, err := Parse("w.toml", []byte(doc))
			if err == nil {
				t.Fatal("accepted")
			}
			if !regexp.MustCompile(`(^|\n)w\.toml:` + strconv.Itoa(c.line) + `\b`).MatchString(err.Error()) {
				t.Errorf("error does not name w.toml:%d:\n%v", c.line, err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error lacks %q:\n%v", c.want, err)
			}
		})
	}
}

// goInternals are what the decoder's own type errors show and a user should
// never see.
var goInternals = []string{"manifests.", "of type", "struct field", "[]string", "map[string]", "int64"}

// A value of the wrong type is named by file:line, its key path (with the
// name of the group, index or model it belongs to) and the type it must
// have, in words. One case per typed field of the manifest.
func TestTypeErrorsInWords(t *testing.T) {
	for _, c := range []struct {
		name, replace, with string
		line                int
		want                string // after "w.toml:<line>: "
	}{
		{"name", `name = "f5-tts-worker"`, `name = 3`, 1, `name: must be a string in quotes, not the number 3`},
		{"name as a date", `name = "f5-tts-worker"`, `name = 2024-01-01`, 1, `name: must be a string in quotes, not a date or time`},
		{"python", "[python]\nrequires = \">=3.11,<3.13\"", `python = "3.11"`, 2, `python: must be a table, written [python], not the string "3.11"`},
		{"python.requires", `requires = ">=3.11,<3.13"`, `requires = 3.11`, 3, `python.requires: must be a string in quotes, not the number 3.11`},
		{"lock.path", `path = "pylock.toml"`, `path = true`, 5, `lock.path: must be a string in quotes, not true`},
		{"index", "[[index]]\nurl = \"https://pypi.org/simple\"\nmirrors = [\"https://mirror.example/simple\"]", "[index]\nurl = \"https://pypi.org/simple\"", 6, `index: must be tables, each written [[index]], not a table`},
		{"index.name", `url = "https://pypi.org/simple"`, "name = 7\nurl = \"https://pypi.org/simple\"", 7, `index[0].name (index "https://pypi.org/simple"): must be a string in quotes, not the number 7`},
		{"index.url", `url = "https://pypi.org/simple"`, "name = \"pypi\"\nurl = 1", 8, `index[0].url (index "pypi"): must be a string in quotes, not the number 1`},
		{"index.mirrors", `mirrors = ["https://mirror.example/simple"]`, `mirrors = "https://mirror.example/simple"`, 8, `index[0].mirrors (index "https://pypi.org/simple"): must be a list of strings, such as ["a", "b"], not the string "https://mirror.example/simple"`},
		{"index.mirrors[0]", `mirrors = ["https://mirror.example/simple"]`, `mirrors = [1]`, 8, `index[0].mirrors[0] (index "https://pypi.org/simple"): must be a string in quotes, not the number 1`},
		{"index.allow-http", `mirrors = ["https://mirror.example/simple"]`, "mirrors = []\nallow-http = \"yes\"", 9, `index[0].allow-http (index "https://pypi.org/simple"): must be true or false, not the string "yes" (write it without quotes)`},
		{"group.name", `name = "TTS"`, `name = 1`, 10, `group[0].name: must be a string in quotes, not the number 1`},
		{"group.required", `required = true`, `required = "yes"`, 11, `group[0].required (group "TTS"): must be true or false, not the string "yes" (write it without quotes)`},
		{"group.requirements", `requirements = ["whisperx==3.7.4"]`, `requirements = "whisperx==3.7.4"`, 17, `group[1].requirements (group "asr"): must be a list of strings, such as ["a", "b"], not the string "whisperx==3.7.4"`},
		{"group.requirements[1]", `requirements = ["whisperx==3.7.4"]`, `requirements = ["whisperx==3.7.4", false]`, 17, `group[1].requirements[1] (group "asr"): must be a string in quotes, not false`},
		{"group.when", `when = { cuda = ">=12.8" }`, `when = ">=12.8"`, 13, `group[0].when (group "TTS"): must be a table of strings, such as { NAME = "value" }, not the string ">=12.8"`},
		{"group.when.cuda", `when = { cuda = ">=12.8" }`, `when = { cuda = 12.8 }`, 13, `group[0].when.cuda (group "TTS"): must be a string in quotes, not the number 12.8`},
		{"model.repo", `repo = "SWivid/F5-TTS"`, `repo = 5`, 24, `model[0].repo: must be a string in quotes, not the number 5`},
		{"model.revision", `revision = "0123456789abcdef0123456789abcdef01234567"`, `revision = 1234`, 25, `model[0].revision (model "SWivid/F5-TTS"): must be a string in quotes, not the number 1234`},
		{"model.repo-type", "group = \"tts\"\n[run]", "group = \"tts\"\nrepo-type = [\"model\"]\n[run]", 28, `model[0].repo-type (model "SWivid/F5-TTS"): must be a string in quotes, not a list`},
		{"model.files", `files = ["F5TTS_v1_Base/model_1250000.safetensors", "F5TTS_v1_Base/vocab.txt"]`, `files = "F5TTS_v1_Base/vocab.txt"`, 26, `model[0].files (model "SWivid/F5-TTS"): must be a list of strings, such as ["a", "b"], not the string "F5TTS_v1_Base/vocab.txt"`},
		{"model.group", `group = "tts"`, `group = { name = "tts" }`, 27, `model[0].group (model "SWivid/F5-TTS"): must be a string in quotes, not a table`},
		{"run", "[run]", "[[run]]", 28, `run: must be a table, written [run], not a list`},
		{"run.command", `command = ["python", "-u", "/app/handler.py"]`, `command = "python -u /app/handler.py"`, 29, `run.command: must be a list of strings, such as ["a", "b"], not the string "python -u /app/handler.py"`},
		{"run.command[1]", `command = ["python", "-u", "/app/handler.py"]`, `command = ["python", 1]`, 29, `run.command[1]: must be a string in quotes, not the number 1`},
		{"case-blind key", `name = "f5-tts-worker"`, "name = \"f5-tts-worker\"\nRUN = []", 2, `RUN: keys are case-sensitive: write "run"`},
		{"case-blind key in a group", `required = true`, `Required = true`, 11, `group[0].Required: keys are case-sensitive: write "required"`},
		{"run.ready", `ready = "notify"`, `ready = true`, 30, `run.ready: must be a string in quotes, not true`},
		{"run.ready-timeout", `ready = "notify"`, "ready = \"notify\"\nready-timeout = 60", 31, `run.ready-timeout: must be a duration in quotes, such as "25s" or "7m", not the number 60`},
		{"run.restart", `restart = "never"`, `restart = false`, 31, `run.restart: must be a string in quotes, not false`},
		{"run.max-restarts", `restart = "never"`, "restart = \"never\"\nmax-restarts = \"5\"", 32, `run.max-restarts: must be a whole number, such as 5, not the string "5" (write it without quotes)`},
		{"run.max-restarts float", `restart = "never"`, "restart = \"never\"\nmax-restarts = 2.5", 32, `run.max-restarts: must be a whole number, such as 5, not the number 2.5`},
		{"run.stop-grace", `stop-grace = "25s"`, `stop-grace = 25`, 32, `run.stop-grace: must be a duration in quotes, such as "25s" or "7m", not the number 25`},
		{"run.hf-offline", `stop-grace = "25s"`, "stop-grace = \"25s\"\nhf-offline = true", 33, `run.hf-offline: must be a string in quotes, not true`},
		{"run.env", `env = { F5_MODEL = "F5TTS_v1_Base" }`, `env = "F5_MODEL=F5TTS_v1_Base"`, 33, `run.env: must be a table of strings, such as { NAME = "value" }, not the string "F5_MODEL=F5TTS_v1_Base"`},
		{"run.env value", `env = { F5_MODEL = "F5TTS_v1_Base" }`, `env = { F5_MODEL = 1 }`, 33, `run.env.F5_MODEL: must be a string in quotes, not the number 1`},
	} {
		t.Run(c.name, func(t *testing.T) {
			doc := strings.Replace(example, c.replace, c.with, 1)
			if doc == example {
				t.Fatalf("replacement %q not found", c.replace)
			}
			_, err := Parse("w.toml", []byte(doc))
			if err == nil {
				t.Fatal("accepted")
			}
			if want := "w.toml:" + strconv.Itoa(c.line) + ": " + c.want; !strings.Contains(err.Error(), want) {
				t.Errorf("error lacks\n%s\ngot:\n%v", want, err)
			}
			for _, s := range goInternals {
				if strings.Contains(err.Error(), s) {
					t.Errorf("error shows Go's %q:\n%v", s, err)
				}
			}
		})
	}
}

// Every value of the wrong type is reported at once, in document order.
func TestTypeErrorsAllAtOnce(t *testing.T) {
	doc := strings.Replace(strings.Replace(example, `required = true`, `required = "yes"`, 1), `stop-grace = "25s"`, `stop-grace = 25`, 1)
	_, err := Parse("w.toml", []byte(doc))
	if err == nil {
		t.Fatal("accepted")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "w.toml:11: group[0].required") || !strings.HasPrefix(lines[1], "w.toml:32: run.stop-grace") {
		t.Fatalf("want the two errors, in order:\n%v", err)
	}
}

func TestEmbeddedManifestsParse(t *testing.T) {
	names := EmbeddedNames()
	if len(names) < 2 {
		t.Fatalf("embedded manifests: %v", names)
	}
	for _, n := range names {
		if _, err := Load(EmbeddedPrefix + n); err != nil {
			t.Errorf("%s: %v", n, err)
		}
	}
}

func TestMissingLockIsOneLine(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "volboot.toml")
	if err := os.WriteFile(p, []byte(example), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = m.ReadLock()
	if err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "pylock.toml") || !strings.Contains(err.Error(), "volboot lock --manifest "+p) {
		t.Fatalf("missing lock error = %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(example))
	f.Add([]byte("[lock]\npath='x'\n[[group]]\nname='a'\nrequirements=['b>=1; python_version<\"3.12\"']\n"))
	f.Add([]byte("[lock]\npath=1\n[[group]]\nname='a'\nrequired='yes'\nrequirements='b'\nwhen={cuda=1}\n[run]\nenv={A=1}\nmax-restarts=1.5\nstop-grace=3\n"))
	f.Add([]byte("python='x'\nindex=[1]\n[[run]]\n[[model]]\nfiles=[{}]\n"))
	f.Add([]byte(buildBase + "[build]\nrequirements=['a','b; python_version<\"4\"']\ntimeout='1m'\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Parse("f.toml", data)
		if err != nil {
			for _, s := range goInternals {
				if strings.Contains(err.Error(), s) && !bytes.Contains(data, []byte(s)) {
					t.Fatalf("error shows Go's %q for %q:\n%v", s, data, err)
				}
			}
			return
		}
		if len(m.Groups) == 0 || m.Lock.Path == "" {
			t.Fatalf("accepted a manifest without groups or lock: %q", data)
		}
	})
}
