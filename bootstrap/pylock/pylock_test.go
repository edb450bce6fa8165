package pylock

import (
	"fmt"
	"strings"
	"testing"

	"github.com/volboot/volboot/bootstrap/pep425"
	"github.com/volboot/volboot/bootstrap/pep440"
	"github.com/volboot/volboot/bootstrap/pep508"
)

const h1 = "1111111111111111111111111111111111111111111111111111111111111111"
const h2 = "2222222222222222222222222222222222222222222222222222222222222222"
const h3 = "3333333333333333333333333333333333333333333333333333333333333333"

const lockDoc = `lock-version = "1.0"
requires-python = ">=3.9"
environments = ["sys_platform == 'linux'"]
dependency-groups = ["tts", "asr"]
default-groups = ["tts"]
created-by = "test"

[[packages]]
name = "torch"
version = "2.8.0+cu128"
marker = "'tts' in dependency_groups or 'asr' in dependency_groups"
index = "https://download.pytorch.org/whl/cu128"
[[packages.wheels]]
url = "https://download.pytorch.org/whl/cu128/torch-2.8.0%2Bcu128-cp311-cp311-manylinux_2_28_x86_64.whl"
size = 100
hashes = { sha256 = "` + h1 + `" }
[[packages.wheels]]
name = "torch-2.8.0+cu128-cp312-cp312-manylinux_2_28_x86_64.whl"
url = "https://download.pytorch.org/whl/cu128/torch-2.8.0%2Bcu128-cp312-cp312-manylinux_2_28_x86_64.whl"
hashes = { sha256 = "` + h2 + `" }

[[packages]]
name = "Six"
version = "1.17.0"
[[packages.wheels]]
path = "wheels/six-1.17.0-py2.py3-none-any.whl"
hashes = { sha256 = "` + h3 + `", md5 = "x" }

[[packages]]
name = "whisperx"
version = "3.7.4"
marker = "'asr' in dependency_groups"
[[packages.wheels]]
name = "whisperx-3.7.4-py3-none-any.whl"
url = "https://files.example/whisperx-3.7.4-py3-none-any.whl"
hashes = { sha256 = "` + h3 + `" }

[[packages]]
name = "onlysdist"
version = "1.0"
marker = "'asr' in dependency_groups and python_version >= '3.12'"
sdist = { url = "https://files.example/onlysdist-1.0.tar.gz", size = 42, hashes = { sha256 = "` + h1 + `" } }

[[packages]]
name = "nothing-to-install"
version = "2.0"
marker = "'asr' in dependency_groups and python_version >= '3.13'"
vcs = { type = "git", url = "https://example.invalid/x.git", commit-id = "abc" }
`

func target(t *testing.T, minor string, groups ...string) Target {
	t.Helper()
	v, err := pep440.Parse("3." + minor + ".4")
	if err != nil {
		t.Fatal(err)
	}
	tags := pep425.CompatibleTags(pep425.Interpreter{Implementation: "cpython", Major: 3, Minor: atoi(minor), ABI: "cp3" + minor,
		Platform: "linux_x86_64", Machine: "x86_64", Libc: "glibc", LibcMajor: 2, LibcMinor: 36})
	return Target{
		Env: pep508.Environment{Values: map[string]string{
			"sys_platform": "linux", "python_version": "3." + minor, "python_full_version": "3." + minor + ".4",
			"os_name": "posix", "platform_machine": "x86_64", "platform_system": "Linux",
			"implementation_name": "cpython", "platform_python_implementation": "CPython",
		}, DependencyGroups: groups},
		Python: v,
		Tags:   pep425.NewRanking(tags),
	}
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n
}

func names(sel []Selected) string {
	var out []string
	for _, s := range sel {
		out = append(out, s.Package.Normalized+"="+s.Filename())
	}
	return strings.Join(out, " ")
}

func TestParseAndSelect(t *testing.T) {
	l, err := Parse("/locks/pylock.toml", []byte(lockDoc))
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Packages) != 5 || l.DefaultGroups[0] != "tts" {
		t.Fatalf("parsed %+v", l)
	}
	torch := l.Packages[0]
	if torch.Wheels[0].Filename != "torch-2.8.0+cu128-cp311-cp311-manylinux_2_28_x86_64.whl" || torch.Wheels[0].Size != 100 || torch.Wheels[1].Size != -1 {
		t.Errorf("torch wheels: %+v %+v", torch.Wheels[0], torch.Wheels[1])
	}
	if got := l.WheelPath(l.Packages[1].Wheels[0]); got != "/locks/wheels/six-1.17.0-py2.py3-none-any.whl" {
		t.Errorf("WheelPath = %q", got)
	}
	if w := l.Where(l.Packages[2]); w != "/locks/pylock.toml:29" {
		t.Errorf("Where(whisperx) = %q", w)
	}

	sel, err := l.Select(target(t, "11", "tts"))
	if err != nil {
		t.Fatal(err)
	}
	if got := names(sel); got != "torch=torch-2.8.0+cu128-cp311-cp311-manylinux_2_28_x86_64.whl six=six-1.17.0-py2.py3-none-any.whl" {
		t.Errorf("tts on 3.11: %s", got)
	}
	sel, err = l.Select(target(t, "12", "asr"))
	if err != nil {
		t.Fatal(err)
	}
	if got := names(sel); !strings.Contains(got, "cp312") || !strings.Contains(got, "whisperx") {
		t.Errorf("asr on 3.12: %s", got)
	}
	// asr on 3.12 reaches the sdist-only package: selected to be built.
	sel, err = l.Select(target(t, "12", "asr"))
	if err != nil {
		t.Fatal(err)
	}
	var sd *Selected
	for i := range sel {
		if sel[i].Package.Normalized == "onlysdist" {
			sd = &sel[i]
		}
	}
	if sd == nil || sd.Wheel != nil || sd.Sdist == nil || sd.Sdist.Filename != "onlysdist-1.0.tar.gz" || sd.Sdist.Size != 42 ||
		sd.Digest() != h1 || sd.Sdist.Ext() != ".tar.gz" || sd.Sdist.URL != "https://files.example/onlysdist-1.0.tar.gz" {
		t.Errorf("sdist-only on 3.12: %+v", sd)
	}
	if w := l.WhereSdist(sd.Sdist); w != "/locks/pylock.toml:42" {
		t.Errorf("WhereSdist = %q", w)
	}
	// asr on 3.13 also reaches a package with only a vcs source: refused,
	// naming it.
	_, err = l.Select(target(t, "13", "asr"))
	if err == nil || !strings.Contains(err.Error(), "nothing-to-install") || !strings.Contains(err.Error(), "only vcs") || !strings.Contains(err.Error(), "pylock.toml:44") {
		t.Errorf("vcs-only: %v", err)
	}
	// 3.13 has no torch wheel.
	_, err = l.Select(target(t, "13", "tts"))
	if err == nil || !strings.Contains(err.Error(), "no wheel for this interpreter") || !strings.Contains(err.Error(), "torch") {
		t.Errorf("no wheel: %v", err)
	}
	// Outside the lock's environments.
	tg := target(t, "11", "tts")
	tg.Env.Values["sys_platform"] = "darwin"
	if _, err := l.Select(tg); err == nil || !strings.Contains(err.Error(), "environments") {
		t.Errorf("environments: %v", err)
	}
}

func TestDuplicateEntryForTarget(t *testing.T) {
	doc := lockDoc + `
[[packages]]
name = "six"
version = "1.16.0"
[[packages.wheels]]
url = "https://files.example/six-1.16.0-py2.py3-none-any.whl"
hashes = { sha256 = "` + h1 + `" }
`
	l, err := Parse("pylock.toml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	_, err = l.Select(target(t, "11", "tts"))
	if err == nil || !strings.Contains(err.Error(), "listed twice") || !strings.Contains(err.Error(), "pylock.toml:50") || !strings.Contains(err.Error(), "pylock.toml:22") {
		t.Fatalf("duplicate: %v", err)
	}
}

func TestBadLocks(t *testing.T) {
	for _, c := range []struct{ name, from, to, want string }{
		{"major", `lock-version = "1.0"`, `lock-version = "2.0"`, "pylock.toml:1: lock-version 2.0 is not supported"},
		{"missing version", `lock-version = "1.0"`, ``, "lock-version is missing"},
		{"no sha256", `hashes = { sha256 = "` + h3 + `", md5 = "x" }`, `hashes = { md5 = "x" }`, "pylock.toml:27: package Six: wheel six-1.17.0-py2.py3-none-any.whl has no sha256"},
		{"short sha", `hashes = { sha256 = "` + h3 + `", md5 = "x" }`, `hashes = { sha256 = "abc" }`, "not 64 hex digits"},
		{"wrong wheel", `path = "wheels/six-1.17.0-py2.py3-none-any.whl"`, `path = "wheels/seven-1.17.0-py2.py3-none-any.whl"`, `is for "seven", not for package "Six"`},
		{"wrong version", `path = "wheels/six-1.17.0-py2.py3-none-any.whl"`, `path = "wheels/six-1.16.0-py2.py3-none-any.whl"`, "has version 1.16.0, but the package is 1.17.0"},
		{"bad marker", `marker = "'asr' in dependency_groups"`, `marker = "'asr' in in dependency_groups"`, "pylock.toml:32: package whisperx: marker"},
		{"bad name", `name = "Six"`, `name = "-six"`, "not a valid distribution name"},
		{"no source", `url = "https://files.example/whisperx-3.7.4-py3-none-any.whl"`, ``, "neither url nor path"},
		{"toml", `created-by = "test"`, `created-by = `, "pylock.toml:6"},
		{"sdist no sha256", `size = 42, hashes = { sha256 = "` + h1 + `" }`, `hashes = {}`, "pylock.toml:42: package onlysdist: sdist onlysdist-1.0.tar.gz has no sha256"},
		{"sdist short sha", `size = 42, hashes = { sha256 = "` + h1 + `" }`, `hashes = { sha256 = "12" }`, "not 64 hex digits"},
		{"sdist no source", `sdist = { url = "https://files.example/onlysdist-1.0.tar.gz", `, `sdist = { `, "sdist has neither url nor path"},
		{"sdist relative url", `https://files.example/onlysdist-1.0.tar.gz`, `onlysdist-1.0.tar.gz`, "is not an absolute URL"},
		{"sdist not an archive", `onlysdist-1.0.tar.gz`, `onlysdist-1.0.rar`, "is not a .tar.gz, .zip, .tar.bz2 archive"},
		{"sdist of another package", `onlysdist-1.0.tar.gz`, `othersdist-1.0.tar.gz`, "is not an sdist of package onlysdist 1.0"},
		{"sdist of another version", `onlysdist-1.0.tar.gz`, `onlysdist-1.1.tar.gz`, "is not an sdist of package onlysdist 1.0"},
		{"sdist negative size", `size = 42`, `size = -1`, "size -1 is negative"},
	} {
		t.Run(c.name, func(t *testing.T) {
			doc := strings.Replace(lockDoc, c.from, c.to, 1)
			_, err := Parse("pylock.toml", []byte(doc))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("want %q, got %v", c.want, err)
			}
		})
	}
}

// Sdist file names come in PEP 625's normalized spelling and in older
// ones whose names hold hyphens; all name their package and version.
func TestSdistNames(t *testing.T) {
	for _, c := range []struct {
		pkg, version, file string
		ok                 bool
	}{
		{"antlr4-python3-runtime", "4.9.3", "antlr4-python3-runtime-4.9.3.tar.gz", true},
		{"antlr4-python3-runtime", "4.9.3", "antlr4_python3_runtime-4.9.3.tar.gz", true},
		{"transformers-stream-generator", "0.0.5", "transformers-stream-generator-0.0.5.tar.gz", true},
		{"Encodec", "0.1.1", "encodec-0.1.1.zip", true},
		{"encodec", "0.1.1", "encodec-0.1.1.tar.bz2", true},
		{"encodec", "0.1.1", "encodec-0.1.01.tar.gz", true}, // the same version
		{"encodec", "0.1.1", "encodec-0.1.2.tar.gz", false},
		{"encodec", "", "encodec-0.1.2.tar.gz", true},
		{"encodec", "0.1.1", "encodec.tar.gz", false},
		{"encodec", "0.1.1", "-0.1.1.tar.gz", false},
		{"a-b", "1.0", "a-b-c-1.0.tar.gz", false},
	} {
		doc := "lock-version = \"1.0\"\n[[packages]]\nname = \"" + c.pkg + "\"\n"
		if c.version != "" {
			doc += "version = \"" + c.version + "\"\n"
		}
		doc += "sdist = { path = \"sdists/" + c.file + "\", hashes = { sha256 = \"" + h2 + "\" } }\n"
		l, err := Parse("/l/pylock.toml", []byte(doc))
		if (err == nil) != c.ok {
			t.Errorf("%s %s from %s: %v, want ok %v", c.pkg, c.version, c.file, err, c.ok)
			continue
		}
		if err == nil {
			if got := l.SdistPath(l.Packages[0].Sdist); got != "/l/sdists/"+c.file {
				t.Errorf("SdistPath = %q", got)
			}
		}
	}
}

// A package that has wheels, none for this interpreter, and an sdist is
// selected to be built; one with a fitting wheel never is.
func TestSdistFallback(t *testing.T) {
	doc := `lock-version = "1.0"
[[packages]]
name = "fast"
version = "1.0"
sdist = { url = "https://f.example/fast-1.0.tar.gz", hashes = { sha256 = "` + h1 + `" } }
[[packages.wheels]]
url = "https://f.example/fast-1.0-cp312-cp312-manylinux_2_28_x86_64.whl"
hashes = { sha256 = "` + h2 + `" }
[[packages.wheels]]
url = "https://f.example/fast-1.0-cp311-cp311-manylinux_2_28_x86_64.whl"
hashes = { sha256 = "` + h3 + `" }
`
	l, err := Parse("pylock.toml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	for minor, want := range map[string]string{"11": "fast=fast-1.0-cp311-cp311-manylinux_2_28_x86_64.whl", "12": "fast=fast-1.0-cp312-cp312-manylinux_2_28_x86_64.whl", "13": "fast=fast-1.0.tar.gz"} {
		sel, err := l.Select(target(t, minor))
		if err != nil {
			t.Fatal(err)
		}
		if got := names(sel); got != want {
			t.Errorf("3.%s: %s, want %s", minor, got, want)
		}
		if (sel[0].Sdist != nil) == (sel[0].Wheel != nil) {
			t.Errorf("3.%s: exactly one of Wheel and Sdist must be set: %+v", minor, sel[0])
		}
	}
}

func TestUnknownKeysWarn(t *testing.T) {
	doc := strings.Replace(lockDoc, `created-by = "test"`, "created-by = \"test\"\nfuture-key = 1", 1)
	l, err := Parse("pylock.toml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Warnings) != 1 || !strings.Contains(l.Warnings[0], "pylock.toml:7") || !strings.Contains(l.Warnings[0], "future-key") {
		t.Fatalf("warnings %v", l.Warnings)
	}
}

// TestTypeErrorsInWords: a value of the wrong type is reported with
// file:line, key path and the type wanted in words, all at once, never
// with Go's type names (it was "pylock.rawLock.RequiresPython of type
// string").
func TestTypeErrorsInWords(t *testing.T) {
	doc := "lock-version = \"1.0\"\nrequires-python = 3\n\n[[packages]]\nname = \"a\"\nversion = 1\n" +
		"wheels = [{ url = \"https://x/a-1-py3-none-any.whl\", size = \"12\", hashes = { sha256 = \"" + h1 + "\" } }]\n"
	_, err := Parse("bad.toml", []byte(doc))
	if err == nil {
		t.Fatal("accepted")
	}
	msg := err.Error()
	for _, want := range []string{
		"bad.toml:2: requires-python: must be a string in quotes, not the number 3",
		"bad.toml:6: packages[0].version",
		"must be a whole number, such as 5, not the string \"12\" (write it without quotes)",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "pylock.raw") || strings.Contains(msg, "of type") {
		t.Errorf("error names Go types:\n%s", msg)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(lockDoc))
	f.Add([]byte("lock-version = '1.0'\n[[packages]]\nname='a-b'\nversion='1'\nsdist={name='a_b-1.zip', path='x', size=3, hashes={sha256='" + h1 + "'}}\n"))
	f.Add([]byte("lock-version = '1.0'\n[[packages]]\nname='a'\n[[packages.wheels]]\nname='a-1-py3-none-any.whl'\npath='x'\nhashes={sha256='" + h1 + "'}\n"))
	f.Add([]byte("lock-version = '1.0'\nrequires-python = 3\n[[packages]]\nname = 1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := Parse("f.toml", data)
		if err != nil {
			if msg := err.Error(); strings.Contains(msg, "pylock.raw") || strings.Contains(msg, "of type") {
				t.Fatalf("an error names Go types: %s", msg)
			}
			return
		}
		for _, p := range l.Packages {
			for _, w := range p.Wheels {
				if len(w.SHA256) != 64 || w.Parsed.NormalizedName() != p.Normalized {
					t.Fatalf("accepted bad wheel %+v of %+v", w, p)
				}
			}
			if s := p.Sdist; s != nil {
				if len(s.SHA256) != 64 || s.Ext() == "" || (s.URL == "" && s.Path == "") || strings.ContainsAny(s.Filename, "/\x00") {
					t.Fatalf("accepted bad sdist %+v of %+v", s, p)
				}
			}
		}
	})
}

// BenchmarkParseLarge parses a lock the size of the F5-TTS stack's (about
// 150 packages, 3 wheels each): it is read on every boot, the in-sync one
// included.
func BenchmarkParseLarge(b *testing.B) {
	var doc strings.Builder
	doc.WriteString("lock-version = \"1.0\"\nrequires-python = \">=3.11\"\n")
	for i := 0; i < 150; i++ {
		fmt.Fprintf(&doc, "[[packages]]\nname = \"pkg%d\"\nversion = \"1.%d.0\"\nmarker = \"'tts' in dependency_groups and python_version >= '3.9'\"\n", i, i)
		for _, tag := range []string{"cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64", "cp312-cp312-manylinux_2_17_x86_64", "py3-none-any"} {
			fmt.Fprintf(&doc, "[[packages.wheels]]\nurl = \"https://files.example/pkg%d-1.%d.0-%s.whl\"\nsize = 12345\nhashes = { sha256 = %q }\n", i, i, tag, h1)
		}
	}
	data := []byte(doc.String())
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := Parse("pylock.toml", data); err != nil {
			b.Fatal(err)
		}
	}
}

// SelectWheels picks named packages, wheels only: what a build
// environment is made of.
func TestSelectWheels(t *testing.T) {
	l, err := Parse("pylock.toml", []byte(lockDoc))
	if err != nil {
		t.Fatal(err)
	}
	sel, err := l.SelectWheels(target(t, "11", "tts"), []string{"six", "torch"})
	if err != nil {
		t.Fatal(err)
	}
	if got := names(sel); got != "six=six-1.17.0-py2.py3-none-any.whl torch=torch-2.8.0+cu128-cp311-cp311-manylinux_2_28_x86_64.whl" {
		t.Errorf("got %s", got)
	}
	// whisperx is not for tts; onlysdist has no wheel; nothing-else is
	// not in the lock.
	_, err = l.SelectWheels(target(t, "12", "tts"), []string{"whisperx", "nothing-else"})
	if err == nil || !strings.Contains(err.Error(), "no package whisperx for dependency groups tts") || !strings.Contains(err.Error(), "no package nothing-else") {
		t.Errorf("missing: %v", err)
	}
	_, err = l.SelectWheels(target(t, "12", "asr"), []string{"onlysdist"})
	if err == nil || !strings.Contains(err.Error(), "onlysdist 1.0 has only sdist and no wheel") {
		t.Errorf("sdist only: %v", err)
	}
}
