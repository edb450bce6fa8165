// Package manifests holds volboot's manifest format (volboot.toml,
// docs/DESIGN.md §13): its strict decoding, its validation, and the
// manifests embedded in the binary.
//
// Decoding is strict: an unknown key is an error naming file:line, because a
// misspelt key ("requirments") silently ignored would install the wrong
// environment. Validation reports every problem it finds at once, each naming
// file:line and the field, so that one run of `volboot manifest check` shows
// everything to fix. Names of groups and requirements are normalized per
// PEP 503.
package manifests

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/Masterminds/semver/v3"
	"github.com/pelletier/go-toml/v2"

	"github.com/volboot/volboot/bootstrap/pep440"
	"github.com/volboot/volboot/bootstrap/pep508"
	"github.com/volboot/volboot/bootstrap/tomlpos"
)

//go:embed *.toml
var embedded embed.FS

// Default is the name of the embedded manifest used when none is given.
const Default = "f5-tts.toml"

// EmbeddedPrefix marks a manifest read from the binary rather than a file.
const EmbeddedPrefix = "embedded:"

// Manifest is a validated manifest.
type Manifest struct {
	Name    string
	Python  Python
	Lock    LockRef
	Indexes []Index
	Groups  []Group
	Models  []Model
	Run     Run
	Build   Build

	// File names where the manifest came from: a path, or
	// "embedded:<name>" for a manifest built into volboot.
	File string
	// Digest is the sha256 of the manifest's bytes: part of the key that
	// maps a boot to its generation.
	Digest string

	pos *tomlpos.Index
}

// Python constrains the interpreter.
type Python struct {
	Requires pep440.Specifiers
}

// LockRef points at the PEP 751 lock.
type LockRef struct {
	Path string // as written; relative to the manifest
}

// Index is a package index with its mirrors.
type Index struct {
	Name      string
	URL       string
	Mirrors   []string
	AllowHTTP bool
}

// Group is a named set of requirements installed or degraded together.
type Group struct {
	Name         string // PEP 503 normalized
	Required     bool
	Requirements []pep508.Requirement
	When         []Condition
}

// Build says how locked sdists are built into wheels (DESIGN.md §5.7).
type Build struct {
	// Requirements are every package of the build environment, its
	// backends' own dependencies included (volboot resolves nothing):
	// each is installed from its wheel in the lock, selected for the
	// dependency group BuildGroup. Empty: sdists are not built.
	Requirements []pep508.Requirement
	// Timeout bounds each sdist's build.
	Timeout time.Duration
}

// BuildGroup is the dependency group the lock's build requirements are
// selected for: a lock may mark them `'volboot-build' in dependency_groups`
// to keep them out of the groups' own environments, or leave them without
// a marker. No [[group]] may have this name.
const BuildGroup = "volboot-build"

// DefaultBuildRequirements build setup.py projects, the F5 stack's sdists
// among them: PEP 518's default for a project without pyproject.toml, and
// wheel, which setuptools before 70.1 needs to make a wheel.
var DefaultBuildRequirements = []string{"setuptools>=40.8.0", "wheel"}

// DefaultBuildTimeout bounds one sdist's build unless [build].timeout
// says otherwise: a pure-Python build takes seconds.
const DefaultBuildTimeout = 5 * time.Minute

// Condition is one `when` entry: a hardware fact and a semver constraint.
type Condition struct {
	Fact       string // one of Facts
	Constraint *semver.Constraints
	Text       string // as written
}

// Facts are the hardware facts a `when` condition may test.
var Facts = []string{"cuda", "compute-capability", "driver"}

// Model is a set of files of one Hugging Face repository.
type Model struct {
	Repo     string
	Revision string
	RepoType string // model, dataset or space
	Files    []string
	Group    string // normalized group name
}

// Run says how to start and supervise the handler.
type Run struct {
	Command      []string
	Ready        string // "notify", "started" or an http(s) URL
	ReadyTimeout time.Duration
	Restart      string // "never" or "on-failure"
	MaxRestarts  int
	StopGrace    time.Duration
	HFOffline    string // "auto", "always" or "never"
	Env          map[string]string
}

// Defaults for [run].
const (
	DefaultReadyTimeout = 7 * time.Minute // RunPod's RUNPOD_INIT_TIMEOUT default
	DefaultStopGrace    = 25 * time.Second
	DefaultMaxRestarts  = 5
)

// ReservedEnv are handler variables volboot sets itself (DESIGN.md §15).
var ReservedEnv = []string{"VIRTUAL_ENV", "NOTIFY_SOCKET", "VOLBOOT_GROUPS", "VOLBOOT_DEGRADED", "VOLBOOT_CAPABILITIES"}

// Where returns "file:line" for a value path such as "group[1].requirements[0]".
func (m *Manifest) Where(path string) string { return m.pos.Where(path) }

// Group returns the group with the given (normalized or not) name.
func (m *Manifest) Group(name string) (*Group, bool) {
	n := pep508.NormalizeName(name)
	for i := range m.Groups {
		if m.Groups[i].Name == n {
			return &m.Groups[i], true
		}
	}
	return nil, false
}

// Load reads a manifest file, or an embedded one when file starts with
// EmbeddedPrefix.
func Load(file string) (*Manifest, error) {
	if name, ok := strings.CutPrefix(file, EmbeddedPrefix); ok {
		data, err := embedded.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("no embedded manifest %q (have: %s)", name, strings.Join(EmbeddedNames(), ", "))
		}
		return Parse(file, data)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read manifest: %w", err)
	}
	return Parse(file, data)
}

// EmbeddedNames lists the manifests built into volboot: every embedded
// .toml but the locks (PEP 751 names them pylock.toml or pylock.<name>.toml;
// older ones here were <name>.pylock.toml).
func EmbeddedNames() []string {
	ents, _ := fs.Glob(embedded, "*.toml")
	var out []string
	for _, e := range ents {
		if !isLockName(e) {
			out = append(out, e)
		}
	}
	return out
}

func isLockName(name string) bool {
	return name == "pylock.toml" || strings.HasPrefix(name, "pylock.") || strings.HasSuffix(name, ".pylock.toml")
}

// ErrLockMissing is wrapped by OpenLock when the lock file does not exist.
var ErrLockMissing = errors.New("lock file missing")

// LockFile returns where the lock is: a path on disk, or "embedded:<name>".
func (m *Manifest) LockFile() string {
	if name, ok := strings.CutPrefix(m.File, EmbeddedPrefix); ok {
		return EmbeddedPrefix + path.Join(path.Dir(name), m.Lock.Path)
	}
	if filepath.IsAbs(m.Lock.Path) {
		return m.Lock.Path
	}
	return filepath.Join(filepath.Dir(m.File), filepath.FromSlash(m.Lock.Path))
}

// ReadLock returns the lock's name and content. A missing lock is one line
// that says how to make one, wrapping ErrLockMissing.
func (m *Manifest) ReadLock() (string, []byte, error) {
	file := m.LockFile()
	var data []byte
	var err error
	if name, ok := strings.CutPrefix(file, EmbeddedPrefix); ok {
		data, err = embedded.ReadFile(name)
	} else {
		data, err = os.ReadFile(file)
	}
	if errors.Is(err, fs.ErrNotExist) {
		return file, nil, fmt.Errorf("%s: lock %s does not exist (%w): make it where the indexes are reachable with `volboot lock --manifest %s --out %s` (uv resolves it), then pass --lock or put it beside the manifest",
			m.Where("lock.path"), file, ErrLockMissing, m.File, path.Base(m.Lock.Path))
	}
	if err != nil {
		return file, nil, fmt.Errorf("read lock %s: %w", file, err)
	}
	return file, data, nil
}

type rawManifest struct {
	Name   string     `toml:"name"`
	Python *rawPython `toml:"python"`
	Lock   *rawLock   `toml:"lock"`
	Index  []rawIndex `toml:"index"`
	Group  []rawGroup `toml:"group"`
	Model  []rawModel `toml:"model"`
	Run    *rawRun    `toml:"run"`
	Build  *rawBuild  `toml:"build"`
}

type rawBuild struct {
	Requirements *[]string    `toml:"requirements"`
	Timeout      durationText `toml:"timeout"`
}

type rawPython struct {
	Requires string `toml:"requires"`
}

type rawLock struct {
	Path string `toml:"path"`
}

type rawIndex struct {
	Name      string   `toml:"name"`
	URL       string   `toml:"url"`
	Mirrors   []string `toml:"mirrors"`
	AllowHTTP bool     `toml:"allow-http"`
}

type rawGroup struct {
	Name         string            `toml:"name"`
	Required     *bool             `toml:"required"`
	Requirements []string          `toml:"requirements"`
	When         map[string]string `toml:"when"`
}

type rawModel struct {
	Repo     string   `toml:"repo"`
	Revision string   `toml:"revision"`
	RepoType string   `toml:"repo-type"`
	Files    []string `toml:"files"`
	Group    string   `toml:"group"`
}

type rawRun struct {
	Command      *[]string         `toml:"command"`
	Ready        string            `toml:"ready"`
	ReadyTimeout durationText      `toml:"ready-timeout"`
	Restart      string            `toml:"restart"`
	MaxRestarts  *int              `toml:"max-restarts"`
	StopGrace    durationText      `toml:"stop-grace"`
	HFOffline    string            `toml:"hf-offline"`
	Env          map[string]string `toml:"env"`
}

// Parse decodes and validates a manifest; file names it in errors.
func Parse(file string, data []byte) (*Manifest, error) {
	pos, err := tomlpos.Build(file, data)
	if err != nil {
		return nil, err
	}
	var doc map[string]any
	if err := toml.Unmarshal(data, &doc); err != nil {
		return nil, decodeError(file, err)
	}
	if err := checkTypes(pos, doc); err != nil {
		return nil, err
	}
	var raw rawManifest
	dec := toml.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&raw); err != nil {
		return nil, decodeError(file, err)
	}
	v := &validator{pos: pos}
	sum := sha256.Sum256(data)
	m := &Manifest{File: file, pos: pos, Name: raw.Name, Digest: hex.EncodeToString(sum[:])}
	v.python(m, raw.Python)
	v.lock(m, raw.Lock)
	v.indexes(m, raw.Index)
	v.groups(m, raw.Group)
	v.models(m, raw.Model)
	v.run(m, raw.Run)
	v.build(m, raw.Build)
	if err := errors.Join(v.errs...); err != nil {
		return nil, err
	}
	return m, nil
}

func decodeError(file string, err error) error {
	var sm *toml.StrictMissingError
	if errors.As(err, &sm) {
		var errs []error
		for _, e := range sm.Errors {
			row, col := e.Position()
			errs = append(errs, fmt.Errorf("%s:%d:%d: unknown key %q: volboot's manifest has no such field (see docs/DESIGN.md §13); fix the spelling or remove it", file, row, col, strings.Join(e.Key(), ".")))
		}
		return errors.Join(errs...)
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		row, col := de.Position()
		return fmt.Errorf("%s:%d:%d: %s", file, row, col, de.Error())
	}
	return fmt.Errorf("%s: %w", file, err)
}

type validator struct {
	pos  *tomlpos.Index
	errs []error
}

func (v *validator) fail(path, format string, args ...any) {
	v.errs = append(v.errs, fmt.Errorf("%s: %s: %s", v.pos.Where(path), path, fmt.Sprintf(format, args...)))
}

func (v *validator) python(m *Manifest, r *rawPython) {
	if r == nil {
		return
	}
	s, err := pep440.ParseSpecifiers(r.Requires)
	if err != nil {
		v.fail("python.requires", "%v", err)
	}
	m.Python.Requires = s
}

func (v *validator) lock(m *Manifest, r *rawLock) {
	if r == nil || strings.TrimSpace(r.Path) == "" {
		v.fail("lock.path", "missing: name the PEP 751 lock file, e.g. [lock] path = \"pylock.toml\"")
		return
	}
	m.Lock.Path = r.Path
}

func (v *validator) indexes(m *Manifest, raw []rawIndex) {
	names := map[string]int{}
	urls := map[string]int{}
	for i, r := range raw {
		at := fmt.Sprintf("index[%d]", i)
		if r.URL == "" {
			v.fail(at+".url", "missing")
			continue
		}
		v.indexURL(at+".url", r.URL, r.AllowHTTP)
		for j, mirror := range r.Mirrors {
			v.indexURL(fmt.Sprintf("%s.mirrors[%d]", at, j), mirror, r.AllowHTTP)
		}
		name := r.Name
		if name == "" {
			if u, err := url.Parse(r.URL); err == nil {
				name = u.Host
			}
		}
		if prev, dup := names[name]; dup {
			v.fail(at+".name", "duplicate index name %q (also index %d at %s)", name, prev, v.pos.Where(fmt.Sprintf("index[%d]", prev)))
		}
		names[name] = i
		if prev, dup := urls[strings.TrimSuffix(r.URL, "/")]; dup {
			v.fail(at+".url", "duplicate index url %q (also index %d)", r.URL, prev)
		}
		urls[strings.TrimSuffix(r.URL, "/")] = i
		m.Indexes = append(m.Indexes, Index{Name: name, URL: r.URL, Mirrors: r.Mirrors, AllowHTTP: r.AllowHTTP})
	}
}

// indexURL checks an index or mirror URL: absolute, http(s), and https
// unless the host is loopback or allow-http is set.
func (v *validator) indexURL(at, raw string, allowHTTP bool) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		v.fail(at, "%q is not an absolute URL", raw)
		return
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !allowHTTP && !IsLoopback(u.Hostname()) {
			v.fail(at, "%q is plain http: use https, or set allow-http = true on this index if you trust the network", raw)
		}
	default:
		v.fail(at, "%q: scheme must be https or http", raw)
	}
}

// IsLoopback reports whether host names this machine (localhost or a
// loopback address), where plain http is acceptable.
func IsLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (v *validator) groups(m *Manifest, raw []rawGroup) {
	if len(raw) == 0 {
		v.fail("group", "no [[group]]: a manifest names at least one group of requirements")
	}
	seen := map[string]int{}
	for i, r := range raw {
		at := fmt.Sprintf("group[%d]", i)
		if !pep508.ValidName(r.Name) {
			v.fail(at+".name", "%q is not a valid group name (letters, digits, '-', '_', '.')", r.Name)
			continue
		}
		g := Group{Name: pep508.NormalizeName(r.Name), Required: r.Required == nil || *r.Required}
		if g.Name == BuildGroup {
			v.fail(at+".name", "%q is the dependency group of the build environment ([build]); name the group otherwise", r.Name)
		}
		if prev, dup := seen[g.Name]; dup {
			v.fail(at+".name", "duplicate group %q (also group %d at %s)", r.Name, prev, v.pos.Where(fmt.Sprintf("group[%d]", prev)))
		}
		seen[g.Name] = i
		if len(r.Requirements) == 0 {
			v.fail(at+".requirements", "group %q has no requirements", r.Name)
		}
		reqNames := map[string]bool{}
		for j, s := range r.Requirements {
			rat := fmt.Sprintf("%s.requirements[%d]", at, j)
			req, err := pep508.ParseRequirement(s)
			if err != nil {
				v.fail(rat, "%v", err)
				continue
			}
			n := pep508.NormalizeName(req.Name)
			if reqNames[n] {
				v.fail(rat, "%s is required twice in group %q", req.Name, r.Name)
			}
			reqNames[n] = true
			g.Requirements = append(g.Requirements, req)
		}
		keys := make([]string, 0, len(r.When))
		for k := range r.When {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			wat := at + ".when." + k
			if !knownFact(k) {
				v.fail(wat, "unknown condition %q (known: %s)", k, strings.Join(Facts, ", "))
				continue
			}
			c, err := semver.NewConstraint(r.When[k])
			if err != nil {
				v.fail(wat, "%q is not a semver constraint (e.g. \">=8.0\"): %v", r.When[k], err)
				continue
			}
			g.When = append(g.When, Condition{Fact: k, Constraint: c, Text: r.When[k]})
		}
		m.Groups = append(m.Groups, g)
	}
}

func knownFact(k string) bool {
	for _, f := range Facts {
		if f == k {
			return true
		}
	}
	return false
}

func (v *validator) models(m *Manifest, raw []rawModel) {
	for i, r := range raw {
		at := fmt.Sprintf("model[%d]", i)
		md := Model{Repo: r.Repo, Revision: r.Revision, RepoType: r.RepoType, Files: r.Files, Group: pep508.NormalizeName(r.Group)}
		if !validRepo(r.Repo) {
			v.fail(at+".repo", "%q is not a Hugging Face repo id (\"org/name\" or \"name\")", r.Repo)
		}
		if md.Revision == "" {
			md.Revision = "main"
		} else if strings.ContainsAny(md.Revision, " \t\n") || strings.Contains(md.Revision, "..") {
			v.fail(at+".revision", "%q is not a branch, tag or commit", r.Revision)
		}
		switch md.RepoType {
		case "":
			md.RepoType = "model"
		case "model", "dataset", "space":
		default:
			v.fail(at+".repo-type", "%q: must be model, dataset or space", r.RepoType)
		}
		if len(r.Files) == 0 {
			v.fail(at+".files", "no files: list the paths or glob patterns to fetch")
		}
		for j, f := range r.Files {
			fat := fmt.Sprintf("%s.files[%d]", at, j)
			if f == "" || strings.HasPrefix(f, "/") || hasDotDot(f) {
				v.fail(fat, "%q must be a relative path inside the repository", f)
				continue
			}
			if _, err := path.Match(f, ""); err != nil {
				v.fail(fat, "%q is not a valid glob pattern: %v", f, err)
			}
		}
		if r.Group == "" {
			v.fail(at+".group", "missing: name the group this model belongs to")
		} else if _, ok := m.Group(r.Group); !ok {
			v.fail(at+".group", "unknown group %q", r.Group)
		}
		m.Models = append(m.Models, md)
	}
}

func validRepo(s string) bool {
	parts := strings.Split(s, "/")
	if len(parts) > 2 || s == "" {
		return false
	}
	for _, p := range parts {
		if p == "" || p == "." || p == ".." || strings.HasPrefix(p, "-") {
			return false
		}
		for _, c := range p {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
				return false
			}
		}
	}
	return true
}

func hasDotDot(p string) bool {
	for _, part := range strings.Split(p, "/") {
		if part == ".." {
			return true
		}
	}
	return false
}

func (v *validator) run(m *Manifest, r *rawRun) {
	run := Run{Ready: "started", ReadyTimeout: DefaultReadyTimeout, Restart: "never", MaxRestarts: DefaultMaxRestarts, StopGrace: DefaultStopGrace, HFOffline: "auto"}
	defer func() { m.Run = run }()
	if r == nil {
		return
	}
	if r.Command != nil {
		if len(*r.Command) == 0 {
			v.fail("run.command", "empty: name the handler, e.g. [\"python\", \"-u\", \"/app/handler.py\"], or remove the key and pass the command after --")
		}
		for i, a := range *r.Command {
			if i == 0 && strings.TrimSpace(a) == "" {
				v.fail("run.command[0]", "the program name is empty")
			}
		}
		run.Command = *r.Command
	}
	switch {
	case r.Ready == "":
	case r.Ready == "notify" || r.Ready == "started":
		run.Ready = r.Ready
	case strings.HasPrefix(r.Ready, "http://") || strings.HasPrefix(r.Ready, "https://"):
		if u, err := url.Parse(r.Ready); err != nil || u.Host == "" {
			v.fail("run.ready", "%q is not a URL to poll", r.Ready)
		}
		run.Ready = r.Ready
	default:
		v.fail("run.ready", "%q: must be \"notify\", \"started\" or an http:// URL polled until it answers 200", r.Ready)
	}
	run.ReadyTimeout = v.duration("run.ready-timeout", string(r.ReadyTimeout), run.ReadyTimeout, false)
	run.StopGrace = v.duration("run.stop-grace", string(r.StopGrace), run.StopGrace, true)
	switch r.Restart {
	case "":
	case "never", "on-failure":
		run.Restart = r.Restart
	default:
		v.fail("run.restart", "%q: must be \"never\" or \"on-failure\"", r.Restart)
	}
	if r.MaxRestarts != nil {
		if *r.MaxRestarts < 0 {
			v.fail("run.max-restarts", "%d is negative", *r.MaxRestarts)
		}
		run.MaxRestarts = *r.MaxRestarts
	}
	switch r.HFOffline {
	case "":
	case "auto", "always", "never":
		run.HFOffline = r.HFOffline
	default:
		v.fail("run.hf-offline", "%q: must be \"auto\", \"always\" or \"never\"", r.HFOffline)
	}
	for k, val := range r.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			v.fail("run.env."+k, "%q is not an environment variable name", k)
		}
		for _, res := range ReservedEnv {
			if k == res {
				v.fail("run.env."+k, "%s is set by volboot for the handler and cannot be overridden", k)
			}
		}
		if strings.ContainsRune(val, 0) {
			v.fail("run.env."+k, "value contains a NUL byte")
		}
	}
	run.Env = r.Env
}

func (v *validator) build(m *Manifest, r *rawBuild) {
	m.Build.Timeout = DefaultBuildTimeout
	reqs := DefaultBuildRequirements
	if r != nil {
		m.Build.Timeout = v.duration("build.timeout", string(r.Timeout), DefaultBuildTimeout, false)
		if r.Requirements != nil {
			reqs = *r.Requirements
		}
	}
	seen := map[string]bool{}
	for i, s := range reqs {
		at := fmt.Sprintf("build.requirements[%d]", i)
		req, err := pep508.ParseRequirement(s)
		if err != nil {
			v.fail(at, "%v", err)
			continue
		}
		switch n := pep508.NormalizeName(req.Name); {
		case req.URL != "":
			v.fail(at, "%s: a build requirement is a wheel of the lock, not a URL: lock it and name it here", req.Name)
		case len(req.Extras) > 0:
			v.fail(at, "%s: extras are not installed in the build environment: list the packages they add instead", req.Name)
		case seen[n]:
			v.fail(at, "%s is listed twice", req.Name)
		default:
			seen[n] = true
			m.Build.Requirements = append(m.Build.Requirements, req)
		}
	}
}

func (v *validator) duration(at, s string, def time.Duration, zeroOK bool) time.Duration {
	if s == "" {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		v.fail(at, "%q is not a duration (e.g. \"25s\", \"7m\")", s)
		return def
	}
	if d < 0 || (d == 0 && !zeroOK) {
		v.fail(at, "%q must be positive", s)
		return def
	}
	return d
}
