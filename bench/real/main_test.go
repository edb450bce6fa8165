package main

import (
	"os"
	"strings"
	"testing"

	"github.com/volboot/volboot/bootstrap/pylock"
	"github.com/volboot/volboot/manifests"
)

// The second install's lock differs from the embedded one in changeName
// alone, and installers can read it.
func TestChangeOne(t *testing.T) {
	data, err := os.ReadFile("../../manifests/pylock.f5-tts.toml")
	if err != nil {
		t.Fatal(err)
	}
	changed, err := changeOne(data)
	if err != nil {
		t.Fatal(err)
	}
	before, err := pylock.Parse("pylock.toml", data)
	if err != nil {
		t.Fatal(err)
	}
	after, err := pylock.Parse("pylock.toml", changed)
	if err != nil {
		t.Fatalf("the changed lock: %v", err)
	}
	if len(after.Packages) != len(before.Packages) {
		t.Fatalf("%d packages after the change, %d before", len(after.Packages), len(before.Packages))
	}
	for i, p := range after.Packages {
		b := before.Packages[i]
		if p.Normalized != changeName {
			if p.Version != b.Version || len(p.Wheels) != len(b.Wheels) {
				t.Errorf("%s changed too: %s -> %s", p.Name, b.Version, p.Version)
			}
			continue
		}
		if p.Version != changeTo || p.Sdist != nil || len(p.Wheels) != 1 ||
			p.Wheels[0].SHA256 != "7f585706bfddbdebf89daac705b2dfcc16890130727d3197ca62c732b4310953" {
			t.Errorf("%s after the change: version %s, sdist %v, %d wheels", p.Name, p.Version, p.Sdist != nil, len(p.Wheels))
		}
	}
	if _, err := changeOne(changed); err == nil {
		t.Error("changing a lock without the package's old version: no error")
	}
}

// The benchmark's manifest is the embedded one without its models.
func TestWithoutModels(t *testing.T) {
	data, err := os.ReadFile("../../manifests/f5-tts.toml")
	if err != nil {
		t.Fatal(err)
	}
	full, err := manifests.Parse("f5-tts.toml", data)
	if err != nil {
		t.Fatal(err)
	}
	m, err := manifests.Parse("volboot.toml", withoutModels(data))
	if err != nil {
		t.Fatalf("the manifest without models: %v", err)
	}
	if len(full.Models) == 0 || len(m.Models) != 0 {
		t.Errorf("models: %d in the embedded manifest, %d left", len(full.Models), len(m.Models))
	}
	if len(m.Groups) != len(full.Groups) || m.Run.Ready != full.Run.Ready {
		t.Errorf("more than the models went: %d groups of %d, ready %q", len(m.Groups), len(full.Groups), m.Run.Ready)
	}
}

// withoutModels keeps every line outside [[model]] tables, in order, and
// none inside; changeOne never panics and, when it succeeds, changes the
// package's version line.
func FuzzInputs(f *testing.F) {
	f.Add([]byte("name = \"x\"\n[[model]]\nrepo = \"a/b\"\n[run]\nready = \"notify\"\n"))
	f.Add([]byte("[[packages]]\nname = \"tqdm\"\nversion = \"4.70.1\"\nwheels = [\n    { url = \"u\" },\n]\n\n[[packages]]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		kept := string(withoutModels(data))
		if kept == "" {
			return // everything was a model's
		}
		out := strings.Split(kept, "\n")
		in := strings.Split(string(data), "\n")
		j := 0
		for _, line := range out {
			if strings.TrimSpace(line) == "[[model]]" {
				t.Fatalf("a [[model]] header survived: %q", out)
			}
			for j < len(in) && in[j] != line {
				j++
			}
			if j == len(in) {
				t.Fatalf("line %q is not from the input, in order", line)
			}
			j++
		}
		if changed, err := changeOne(data); err == nil && !strings.Contains(string(changed), "version = \""+changeTo+"\"") {
			t.Fatalf("changeOne succeeded without writing version %s", changeTo)
		}
	})
}
