package manifests

import (
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
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Parse("f.toml", data)
		if err != nil {
			return
		}
		if len(m.Groups) == 0 || m.Lock.Path == "" {
			t.Fatalf("accepted a manifest without groups or lock: %q", data)
		}
	})
}
