// Package lockgentest stands in for uv and for the pip that installs it,
// so that `volboot lock` can be tested offline and deterministically.
//
// A test binary that calls Main from its TestMain becomes the fake when it
// is run under the name "uv" or "python3" (Install makes those links):
//
//   - uv --version prints the line in the file "uv-version" beside the
//     program, else "uv 0.13.9 (fake)".
//   - uv pip compile IN --format pylock.toml -o OUT … resolves IN against
//     the Universe named by $FAKEUV_UNIVERSE (honouring --constraints, the
//     pins of an OUT that exists as preferences, --upgrade-package), writes
//     OUT, and appends a Call to $FAKEUV_LOG. It picks the highest version
//     every specifier admits and does not backtrack.
//   - python3 -m pip install … --target T -r REQ writes T as pip would for
//     the uv wheel: T/bin/uv (a copy of this very program), its RECORD, and
//     T/bin/uv-version from $FAKEPY_UV_VERSION. $FAKEPY_FAIL makes it fail.
package lockgentest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/pelletier/go-toml/v2"

	"github.com/volboot/volboot/bootstrap/pep440"
	"github.com/volboot/volboot/bootstrap/pep508"
)

// Environment variables the fakes read.
const (
	EnvUniverse  = "FAKEUV_UNIVERSE"
	EnvLog       = "FAKEUV_LOG"
	EnvPyVersion = "FAKEPY_UV_VERSION"
	EnvPyFail    = "FAKEPY_FAIL"
)

// Universe is every package the fake index holds.
type Universe struct {
	Packages map[string][]Version `json:"packages"` // by normalized name
	// NoCache makes --offline runs fail as uv does on a cache miss.
	NoCache bool `json:"no_cache,omitempty"`
}

// Version is one release of a package.
type Version struct {
	Version string   `json:"version"`
	Deps    []string `json:"deps,omitempty"`   // PEP 508 requirements
	Marker  string   `json:"marker,omitempty"` // the marker uv writes for it
	Files   []File   `json:"files,omitempty"`
	// Fail makes a resolution that picks this release fail with this
	// message on stderr (exit 1), as uv does for a failed metadata build.
	Fail string `json:"fail,omitempty"`
	// Unreachable makes it fail as uv does when an index cannot be reached.
	Unreachable string `json:"unreachable,omitempty"` // the URL
}

// File is an artifact of a release.
type File struct {
	Kind   string `json:"kind"` // sdist, wheel or archive
	URL    string `json:"url"`
	Size   int64  `json:"size"` // -1: uv writes no size
	SHA256 string `json:"sha256"`
}

// Call is one recorded `uv pip compile` or `python3 -m pip install` (In is
// then the requirements file).
type Call struct {
	Args        []string `json:"args"`
	Dir         string   `json:"dir"`
	In          string   `json:"in"`
	Constraints string   `json:"constraints,omitempty"`
	Preferences string   `json:"preferences,omitempty"` // the OUT that existed
	Offline     bool     `json:"offline,omitempty"`
	Exit        int      `json:"exit"`
}

// Install links "uv" and "python3" to the running test binary in dir and
// returns dir.
func Install(t testing.TB, dir string) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"uv", "python3"} {
		if err := os.Symlink(self, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// IsFake reports whether this process was started as one of the fakes.
func IsFake() bool {
	switch filepath.Base(os.Args[0]) {
	case "uv", "python3":
		return true
	}
	return false
}

// Main runs the fake this process was started as and returns its exit code.
func Main() int {
	var code int
	var err error
	switch filepath.Base(os.Args[0]) {
	case "uv":
		code, err = fakeUV(os.Args[1:])
	case "python3":
		code, err = fakePython(os.Args[1:])
	default:
		err = fmt.Errorf("lockgentest: not a fake: %s", os.Args[0])
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "error: %v\n", err)
		return 2
	}
	return code
}

// WriteUniverse writes u where the fakes find it and returns the
// environment entries that name it and the call log.
func WriteUniverse(t testing.TB, dir string, u Universe) (env []string, logFile string) {
	t.Helper()
	data, err := json.Marshal(u)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "universe.json")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	logFile = filepath.Join(dir, "calls.jsonl")
	return []string{EnvUniverse + "=" + file, EnvLog + "=" + logFile}, logFile
}

// ReadCalls reads the recorded calls.
func ReadCalls(t testing.TB, logFile string) []Call {
	t.Helper()
	data, err := os.ReadFile(logFile)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []Call
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if line == "" {
			continue
		}
		var c Call
		if err := json.Unmarshal([]byte(line), &c); err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}

// Sdist makes a .tar.gz sdist of name-version holding files (path ->
// content, relative to the sdist's top directory).
func Sdist(t testing.TB, name, version string, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	var names []string
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		body := files[n]
		hdr := &tar.Header{Name: name + "-" + version + "/" + n, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// Digest is the sha256 (hex) of data.
func Digest(data []byte) string {
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:])
}

func fakeUV(args []string) (int, error) {
	if len(args) == 1 && args[0] == "--version" {
		line := "uv 0.13.9 (fake)"
		if b, err := os.ReadFile(filepath.Join(filepath.Dir(os.Args[0]), "uv-version")); err == nil {
			line = strings.TrimSpace(string(b))
		}
		fmt.Println(line)
		return 0, nil
	}
	if len(args) < 3 || args[0] != "pip" || args[1] != "compile" {
		return 2, fmt.Errorf("fake uv: unexpected arguments %q", args)
	}
	in := args[2]
	dir, _ := os.Getwd()
	call := Call{Args: args, Dir: dir}
	var out, constraints, format string
	var upgrade []string
	for i := 3; i < len(args); i++ {
		next := func() string {
			i++
			if i >= len(args) {
				return ""
			}
			return args[i]
		}
		switch args[i] {
		case "-o", "--output-file":
			out = next()
		case "--constraints", "-c":
			constraints = next()
		case "--upgrade-package", "-P":
			upgrade = append(upgrade, next())
		case "--format":
			format = next()
		case "--python-platform", "--python-version", "--index", "--default-index", "--color":
			next()
		case "--offline":
			call.Offline = true
		case "--no-header", "--no-config", "--no-progress":
		default:
			return 2, fmt.Errorf("fake uv: unknown argument %q", args[i])
		}
	}
	if format != "pylock.toml" || out == "" {
		return 2, fmt.Errorf("fake uv: want --format pylock.toml and -o")
	}
	inData, err := os.ReadFile(in)
	if err != nil {
		return 2, err
	}
	call.In = string(inData)
	if constraints != "" {
		b, err := os.ReadFile(constraints)
		if err != nil {
			return 2, err
		}
		call.Constraints = string(b)
	}
	prefs := map[string]string{}
	if b, err := os.ReadFile(out); err == nil {
		call.Preferences = string(b)
		var doc struct {
			Packages []struct {
				Name    string `toml:"name"`
				Version string `toml:"version"`
			} `toml:"packages"`
		}
		if err := toml.Unmarshal(b, &doc); err != nil {
			return 2, fmt.Errorf("fake uv: read preferences: %v", err)
		}
		for _, p := range doc.Packages {
			prefs[pep508.NormalizeName(p.Name)] = p.Version
		}
	}
	for _, p := range upgrade {
		delete(prefs, pep508.NormalizeName(p))
	}
	code, stderr, lock := resolve(string(inData), call.Constraints, prefs, call.Offline)
	call.Exit = code
	if err := record(call); err != nil {
		return 2, err
	}
	if code != 0 {
		fmt.Fprint(os.Stderr, stderr)
		return code, nil
	}
	if err := os.WriteFile(out, lock, 0o644); err != nil {
		return 2, err
	}
	fmt.Fprintf(os.Stderr, "Resolved packages\n")
	return 0, nil
}

func record(c Call) error {
	file := os.Getenv(EnvLog)
	if file == "" {
		return nil
	}
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(file, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.Write(append(b, '\n'))
	return err
}

func loadUniverse() (Universe, error) {
	var u Universe
	data, err := os.ReadFile(os.Getenv(EnvUniverse))
	if err != nil {
		return u, fmt.Errorf("fake uv: universe: %v", err)
	}
	return u, json.Unmarshal(data, &u)
}

func parseLines(text string) ([]pep508.Requirement, error) {
	var out []pep508.Requirement
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		r, err := pep508.ParseRequirement(line)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// resolve is the fake resolver: exit code, stderr, and the lock.
func resolve(in, constraints string, prefs map[string]string, offline bool) (int, string, []byte) {
	u, err := loadUniverse()
	if err != nil {
		return 2, "error: " + err.Error() + "\n", nil
	}
	if offline && u.NoCache {
		return 2, "error: Network connectivity is disabled, but the requested data wasn't found in the cache for: `alpha`\n", nil
	}
	reqs, err := parseLines(in)
	if err != nil {
		return 2, "error: " + err.Error() + "\n", nil
	}
	cons, err := parseLines(constraints)
	if err != nil {
		return 2, "error: " + err.Error() + "\n", nil
	}
	specs := map[string][]string{}
	addSpec := func(r pep508.Requirement) {
		n := r.NormalizedName()
		specs[n] = append(specs[n], r.Specifier.String())
	}
	var queue []string
	for _, r := range reqs {
		addSpec(r)
		queue = append(queue, r.NormalizedName())
	}
	for _, r := range cons {
		addSpec(r)
	}
	resolved := map[string]Version{}
	var order []string
	for len(queue) > 0 {
		name := queue[0]
		queue = queue[1:]
		if _, ok := resolved[name]; ok {
			continue
		}
		versions, ok := u.Packages[name]
		if !ok {
			return 1, fmt.Sprintf("  × No solution found when resolving dependencies:\n  ╰─▶ Because %s was not found in the package registry and you require %s, we can conclude that your requirements are unsatisfiable.\n", name, name), nil
		}
		v, ok := pick(versions, specs[name], prefs[name])
		if !ok {
			return 1, fmt.Sprintf("  × No solution found when resolving dependencies:\n  ╰─▶ Because only %s<=%s is available and you require %s%s, we can conclude that your requirements are unsatisfiable.\n",
				name, versions[len(versions)-1].Version, name, strings.Join(specs[name], ",")), nil
		}
		if v.Unreachable != "" {
			return 2, fmt.Sprintf("error: Request failed after 3 retries in 5.2s\n  cause: Failed to fetch: %s\n  cause: error sending request for url (%s)\n  cause: client error (Connect)\n  cause: dns error\n", v.Unreachable, v.Unreachable), nil
		}
		if v.Fail != "" {
			return 1, v.Fail + "\n", nil
		}
		resolved[name] = v
		order = append(order, name)
		for _, d := range v.Deps {
			r, err := pep508.ParseRequirement(d)
			if err != nil {
				return 2, "error: " + err.Error() + "\n", nil
			}
			addSpec(r)
			queue = append(queue, r.NormalizedName())
		}
	}
	for name, v := range resolved {
		if !admits(specs[name], v.Version) {
			return 1, fmt.Sprintf("  × No solution found when resolving dependencies:\n  ╰─▶ Because you require %s%s and %s==%s was chosen first, we can conclude that your requirements are unsatisfiable.\n",
				name, strings.Join(specs[name], ","), name, v.Version), nil
		}
	}
	sort.Strings(order)
	var b strings.Builder
	b.WriteString("lock-version = \"1.0\"\ncreated-by = \"uv\"\nrequires-python = \">=3.11\"\n")
	for _, name := range order {
		v := resolved[name]
		fmt.Fprintf(&b, "\n[[packages]]\nname = %q\nversion = %q\n", name, v.Version)
		if v.Marker != "" {
			fmt.Fprintf(&b, "marker = %q\n", v.Marker)
		}
		var wheels []string
		for _, f := range v.Files {
			entry := fmt.Sprintf("url = %q, ", f.URL)
			if f.Size >= 0 {
				entry += fmt.Sprintf("size = %d, ", f.Size)
			}
			entry += fmt.Sprintf("hashes = { sha256 = %q }", f.SHA256)
			switch f.Kind {
			case "sdist":
				fmt.Fprintf(&b, "sdist = { %s, upload-time = 2026-01-02T03:04:05Z }\n", entry)
			case "archive":
				fmt.Fprintf(&b, "archive = { %s }\n", entry)
			default:
				wheels = append(wheels, "{ "+entry+" }")
			}
		}
		if len(wheels) > 0 {
			fmt.Fprintf(&b, "wheels = [%s]\n", strings.Join(wheels, ", "))
		}
	}
	return 0, "", []byte(b.String())
}

// pick chooses the preferred version if every specifier admits it, else
// the highest one they admit.
func pick(versions []Version, specs []string, pref string) (Version, bool) {
	if pref != "" && admits(specs, pref) {
		for _, v := range versions {
			if v.Version == pref {
				return v, true
			}
		}
	}
	var best Version
	var bestV pep440.Version
	found := false
	for _, v := range versions {
		pv, err := pep440.Parse(v.Version)
		if err != nil || !admits(specs, v.Version) {
			continue
		}
		if !found || pv.Compare(bestV) > 0 {
			best, bestV, found = v, pv, true
		}
	}
	return best, found
}

func admits(specs []string, version string) bool {
	v, err := pep440.Parse(version)
	if err != nil {
		return false
	}
	for _, s := range specs {
		sp, err := pep440.ParseSpecifiers(s)
		if err != nil || !sp.Contains(v) {
			return false
		}
	}
	return true
}

func fakePython(args []string) (int, error) {
	var target, reqs string
	for i := 0; i+1 < len(args); i++ {
		switch args[i] {
		case "--target":
			target = args[i+1]
		case "-r":
			b, err := os.ReadFile(args[i+1])
			if err != nil {
				return 2, err
			}
			reqs = string(b)
		}
	}
	if err := record(Call{Args: append([]string{"python3"}, args...), In: reqs}); err != nil {
		return 2, err
	}
	if len(args) < 3 || args[0] != "-m" || args[1] != "pip" || args[2] != "install" || target == "" {
		return 2, fmt.Errorf("fake python: unexpected arguments %q", args)
	}
	if msg := os.Getenv(EnvPyFail); msg != "" {
		fmt.Fprintln(os.Stderr, msg)
		return 1, nil
	}
	self, err := os.Executable()
	if err != nil {
		return 2, err
	}
	data, err := os.ReadFile(self)
	if err != nil {
		return 2, err
	}
	bin := filepath.Join(target, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return 2, err
	}
	if err := os.WriteFile(filepath.Join(bin, "uv"), data, 0o755); err != nil {
		return 2, err
	}
	if v := os.Getenv(EnvPyVersion); v != "" {
		if err := os.WriteFile(filepath.Join(bin, "uv-version"), []byte(v+"\n"), 0o644); err != nil {
			return 2, err
		}
	}
	sum := sha256.Sum256(data)
	record := fmt.Sprintf("../../bin/uv,sha256=%s,%d\nuv/__init__.py,sha256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU,0\nuv-0.13.9.dist-info/RECORD,,\n",
		base64.RawURLEncoding.EncodeToString(sum[:]), len(data))
	di := filepath.Join(target, "uv-0.13.9.dist-info")
	if err := os.MkdirAll(di, 0o755); err != nil {
		return 2, err
	}
	return 0, os.WriteFile(filepath.Join(di, "RECORD"), []byte(record), 0o644)
}
