package bootstrap

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/volboot/volboot/bootstrap/interp"
	"github.com/volboot/volboot/bootstrap/venv"
)

// Smoke records that other generations may reuse (DESIGN.md §5.5).
//
// An import's outcome in a generation is a function of what the import
// read and looked up: the files it opened (sources, bytecode, data files,
// dist-info), the shared libraries mapped into the process, the module
// names it looked up (found or not: an optional dependency is a name it
// tried and missed), the distributions it asked importlib.metadata about,
// the directories it listed, and the interpreter. The smoke child
// (smokeprobe.py) records all of that while the import runs, and volboot
// turns it into a record of dependencies, each a key and the value it had
// in the generation:
//
//	f  a file of the generation (path relative to it; a file in a dist-info
//	   directory named by its distribution, not its version): its content
//	   (RECORD's hash, or the store file it is linked from, which the store
//	   names by content), "dir", or absent
//	l  a module name the import found in the generation, or looked up and
//	   missed: the names that could provide it in its parent's directory
//	   (<name>/, <name>.<anything>, <name>/__init__.*)
//	d  a directory of the generation someone listed (not the import system):
//	   its children
//	q  a distribution asked for by name: whether the generation has it
//	a  every distribution listed: the names of all of them
//	p  the .pth files of site-packages (they run before any import): their contents
//	s  the paths of every shared library of the generation, when the import
//	   mapped one from it (the dynamic loader's search is not recorded, so a
//	   library added anywhere may change what it finds)
//	x  a file outside the generation (the interpreter's, the system's):
//	   its size and mtime, or absent
//	e  a directory outside the generation someone listed: its children
//
// The rule: an import that passed in generation A passes in generation B
// without running when both have the same interpreter (its identity,
// interp.Info.Identity) and every dependency of A's record has the same
// value in B (and now, for x and e). Why it is sound, as far as it goes:
// CPython's import of a module is deterministic given the files it reads,
// the names its finders find and the interpreter; B's files at every path
// the import read are the same bytes as A's, every name it looked up
// resolves to the same candidates, so the same code runs on the same
// inputs and takes the same path, and whatever it did not record (below)
// is the same machine's state either way. Values for B are computed from
// B's plan (venv.Builder.Files and the store manifests), not by reading B
// on the volume, so a check costs no round trips; that trusts B to be its
// plan, as a generation's own records always did (status --verify and
// repair are for generations that are not). x and e are checked on the
// machine that checks: a worker of another image gets its own runs. A
// pass taken over is recorded in B with A's bytes, so records travel
// from generation to generation and A may go.
//
// Where it is not: an import whose outcome depends on what it cannot
// record is assumed not to change between two syncs of one volume:
// environment variables (-I drops PYTHON*, but CUDA_VISIBLE_DEVICES and
// the like remain), existence checks by stat (os.path.exists raises no
// audit event), /proc, /sys and /dev (the machine), the time, the network,
// and the dynamic loader's failed probes outside the generation (its
// search inside it is covered by s). An import that starts a process
// (subprocess, exec, fork) gets no reusable record: the process's reads
// are not recorded. A smoke check is a guard against broken installs (a
// wheel for the wrong ABI, a missing dependency, a changed package that
// breaks its importers), not a proof; these are inputs an install does not
// change. A failed or timed-out import is never recorded: a degraded group
// is checked again by every sync that builds it (a failure may be of the
// moment: a full disk, a killed import).

//go:embed smokeprobe.py
var smokeProbe string

// smokeReport is what the smoke child writes to descriptor 3 once the
// import returned (smokeprobe.py).
type smokeReport struct {
	V       int      `json:"v"`
	Prefix  string   `json:"prefix"`
	Modules [][]any  `json:"modules"` // [name, __file__ or "", [__path__...]]
	Missed  []string `json:"missed"`
	Opened  []string `json:"opened"`
	Listed  []string `json:"listed"`
	Dists   []string `json:"dists"`
	Mapped  []string `json:"mapped"`
	Blind   []string `json:"blind"` // why what it read was not all recorded
	mods    []reportMod
}

type reportMod struct {
	name, file string
	paths      []string
}

// maxSmokeReport bounds a report (torch's is about 1 MB).
const maxSmokeReport = 64 << 20

// parseSmokeReport decodes a child's report. Anything but a version 1
// report of the expected shape is an error (the import still passed: it
// just gets no reusable record).
func parseSmokeReport(data []byte) (*smokeReport, error) {
	if len(data) > maxSmokeReport {
		return nil, fmt.Errorf("smoke report of %d bytes", len(data))
	}
	var r smokeReport
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("smoke report: %w", err)
	}
	if dec.More() {
		return nil, errors.New("smoke report: data after the object")
	}
	if r.V != 1 {
		return nil, fmt.Errorf("smoke report version %d", r.V)
	}
	for i, m := range r.Modules {
		if len(m) != 3 {
			return nil, fmt.Errorf("smoke report: module %d has %d fields", i, len(m))
		}
		name, ok1 := m[0].(string)
		file, ok2 := m[1].(string)
		ps, ok3 := m[2].([]any)
		if !ok1 || !ok2 || !ok3 {
			return nil, fmt.Errorf("smoke report: module %d is malformed", i)
		}
		rm := reportMod{name: name, file: file}
		for _, p := range ps {
			s, ok := p.(string)
			if !ok {
				return nil, fmt.Errorf("smoke report: module %s: a path is not a string", name)
			}
			rm.paths = append(rm.paths, s)
		}
		r.mods = append(r.mods, rm)
	}
	return &r, nil
}

// smokeDep is one dependency of an import: its kind (see above), what it
// names, and the value it had.
type smokeDep struct {
	Kind  byte
	Key   string
	Value string
}

// smokeRecord is an import that passed and what it depended on.
type smokeRecord struct {
	Module string
	Interp string // interpHash of the interpreter it ran in
	Deps   []smokeDep
}

const smokeRecordHeader = "volboot-smoke 1"

func interpHash(info *interp.Info) string {
	h := sha256.Sum256([]byte(info.Identity()))
	return hex.EncodeToString(h[:16])
}

const smokeKinds = "fldqapsxe"

// marshal writes the record as text: a header, the module, the
// interpreter, one line per dependency (kind, key, value; tab-separated,
// escaped), and an end line with their count, so that a record cut short
// does not parse.
func (r *smokeRecord) marshal() []byte {
	var b bytes.Buffer
	b.WriteString(smokeRecordHeader + "\n")
	b.WriteString("module\t" + r.Module + "\n")
	b.WriteString("interp\t" + r.Interp + "\n")
	for _, d := range r.Deps {
		b.WriteByte(d.Kind)
		b.WriteByte('\t')
		b.WriteString(escapeField(d.Key))
		b.WriteByte('\t')
		b.WriteString(escapeField(d.Value))
		b.WriteByte('\n')
	}
	fmt.Fprintf(&b, "end\t%d\n", len(r.Deps))
	return b.Bytes()
}

// parseSmokeRecord reads a record; an empty file (a pass recorded by an
// older volboot, or one without dependencies) is not an error: it
// returns nil.
func parseSmokeRecord(data []byte) (*smokeRecord, error) {
	if len(data) == 0 {
		return nil, nil
	}
	if !bytes.HasSuffix(data, []byte("\n")) {
		return nil, errors.New("smoke record: cut short")
	}
	lines := strings.Split(string(data[:len(data)-1]), "\n")
	if len(lines) < 4 || lines[0] != smokeRecordHeader {
		return nil, errors.New("smoke record: not a record")
	}
	r := &smokeRecord{}
	var ok bool
	if r.Module, ok = strings.CutPrefix(lines[1], "module\t"); !ok || !validModuleName(r.Module) {
		return nil, errors.New("smoke record: bad module line")
	}
	if r.Interp, ok = strings.CutPrefix(lines[2], "interp\t"); !ok || len(r.Interp) != 32 || !isHex(r.Interp) {
		return nil, errors.New("smoke record: bad interp line")
	}
	end, ok := strings.CutPrefix(lines[len(lines)-1], "end\t")
	n, err := strconv.Atoi(end)
	if !ok || err != nil || strconv.Itoa(n) != end || n != len(lines)-4 {
		return nil, errors.New("smoke record: bad end line")
	}
	for _, line := range lines[3 : len(lines)-1] {
		f := strings.Split(line, "\t")
		if len(f) != 3 || len(f[0]) != 1 || !strings.Contains(smokeKinds, f[0]) {
			return nil, fmt.Errorf("smoke record: bad line %q", line)
		}
		key, err1 := unescapeField(f[1])
		value, err2 := unescapeField(f[2])
		if err1 != nil || err2 != nil || key == "" {
			return nil, fmt.Errorf("smoke record: bad line %q", line)
		}
		d := smokeDep{Kind: f[0][0], Key: key, Value: value}
		if k := len(r.Deps); k > 0 && !depLess(r.Deps[k-1], d) {
			return nil, errors.New("smoke record: dependencies out of order")
		}
		r.Deps = append(r.Deps, d)
	}
	return r, nil
}

func depLess(a, b smokeDep) bool {
	if a.Kind != b.Kind {
		return a.Kind < b.Kind
	}
	return a.Key < b.Key
}

func validModuleName(s string) bool {
	for _, part := range strings.Split(s, ".") {
		if !isIdentifier(part) {
			return false
		}
	}
	return utf8.ValidString(s)
}

// lookupName says whether a finder of the generation could look name up
// (importlib.import_module takes any string; one with a '/' or an empty
// part names no file).
func lookupName(name string) bool {
	if name == "" || strings.ContainsAny(name, "/\x00") || !utf8.ValidString(name) {
		return false
	}
	for _, part := range strings.Split(name, ".") {
		if part == "" {
			return false
		}
	}
	return true
}

func isHex(s string) bool {
	_, err := hex.DecodeString(s)
	return err == nil
}

// escapeField escapes '%', tabs, newlines and other control characters as
// %XX.
func escapeField(s string) string {
	if !strings.ContainsFunc(s, func(r rune) bool { return r == '%' || r < 0x20 || r == 0x7f }) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '%' || c < 0x20 || c == 0x7f {
			fmt.Fprintf(&b, "%%%02X", c)
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

func unescapeField(s string) (string, error) {
	if !strings.Contains(s, "%") {
		if strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			return "", errors.New("control character")
		}
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '%':
			if i+2 >= len(s) {
				return "", errors.New("short escape")
			}
			v, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
			if err != nil || s[i+1:i+3] != fmt.Sprintf("%02X", v) || !(v == '%' || v < 0x20 || v == 0x7f) {
				return "", errors.New("bad escape")
			}
			b.WriteByte(byte(v))
			i += 2
		case c < 0x20 || c == 0x7f:
			return "", errors.New("control character")
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}

// genIndex answers the values of dependencies for one generation, from
// its plan: what venv.Builder.Build puts where.
type genIndex struct {
	root     string   // the generation's directory, absolute
	roots    []string // root and the paths it is known by (symlinks resolved)
	site     string   // site-packages, relative to root, '/'-separated
	lib64    bool
	files    map[string]string              // canonical path -> content
	children map[string]map[string]struct{} // directory -> child names (directories end in "/")
	dists    map[string]bool                // normalized distribution names
	distDirs map[string]string              // normalized name -> its dist-info directory's name
	pth      string
	libs     string
}

// newGenIndex indexes the generation at root as planned by files.
func newGenIndex(root string, l venv.Layout, files []venv.PlannedFile, storeDir string) *genIndex {
	ix := &genIndex{
		root: root, site: filepath.ToSlash(l.SitePackages), lib64: l.Lib64,
		files: make(map[string]string, len(files)), children: map[string]map[string]struct{}{},
		dists: map[string]bool{}, distDirs: map[string]string{},
	}
	ix.roots = []string{root}
	if real, err := filepath.EvalSymlinks(root); err == nil && real != root {
		ix.roots = append(ix.roots, real)
	}
	// Distributions first: canonical paths name dist-info directories by
	// their distribution.
	for _, f := range files {
		if rest, ok := strings.CutPrefix(f.Path, ix.site+"/"); ok {
			top, _, _ := strings.Cut(rest, "/")
			if name, ok := distDirName(top); ok {
				ix.dists[name] = true
				ix.distDirs[name] = top
			}
		}
	}
	var pth, libs []string
	for _, f := range files {
		var v string
		switch {
		case f.Data != nil:
			h := sha256.Sum256(f.Data)
			v = "sha256:" + hex.EncodeToString(h[:])
		case f.Hash != "":
			v = f.Hash
		default:
			rel, err := filepath.Rel(storeDir, f.Source)
			if err != nil {
				rel = f.Source
			}
			v = "store:" + filepath.ToSlash(rel)
		}
		ix.files[ix.canonical(f.Path)] = v
		for p := f.Path; ; {
			dir, child := path.Split(p)
			dir = strings.TrimSuffix(dir, "/")
			if p != f.Path {
				child += "/"
			}
			kids := ix.children[dir]
			if kids == nil {
				kids = map[string]struct{}{}
				ix.children[dir] = kids
			}
			if _, seen := kids[child]; seen {
				break
			}
			kids[child] = struct{}{}
			if dir == "" {
				break
			}
			p = dir
		}
		if dir, base := path.Split(f.Path); strings.TrimSuffix(dir, "/") == ix.site && strings.HasSuffix(base, ".pth") {
			pth = append(pth, base+"="+v)
		}
		if strings.Contains(path.Base(f.Path), ".so") {
			libs = append(libs, f.Path)
		}
	}
	sort.Strings(pth)
	sort.Strings(libs)
	ix.pth = digestList(pth)
	ix.libs = digestList(libs)
	return ix
}

// distDirName is the normalized distribution name of a dist-info or
// egg-info directory name of site-packages.
func distDirName(top string) (string, bool) {
	stem, ok := strings.CutSuffix(top, ".dist-info")
	if !ok {
		if stem, ok = strings.CutSuffix(top, ".egg-info"); !ok {
			return "", false
		}
	}
	name, _, _ := strings.Cut(stem, "-")
	if name == "" {
		return "", false
	}
	return normalizeDist(name), true
}

// normalizeDist normalizes a distribution name as importlib.metadata
// matches it (runs of -_. are one _, lower case).
func normalizeDist(name string) string {
	var b strings.Builder
	sep := false
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c == '-' || c == '_' || c == '.' {
			sep = true
			continue
		}
		if sep && b.Len() > 0 {
			b.WriteByte('_')
		}
		sep = false
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		b.WriteByte(c)
	}
	return b.String()
}

func digestList(items []string) string {
	h := sha256.New()
	for _, s := range items {
		io.WriteString(h, s)
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// canonical names a generation path by its distribution where it is in a
// dist-info directory, so that a file whose bytes did not change between
// two versions keeps its key.
func (ix *genIndex) canonical(p string) string {
	rest, ok := strings.CutPrefix(p, ix.site+"/")
	if !ok {
		return p
	}
	top, below, _ := strings.Cut(rest, "/")
	if name, ok := distDirName(top); ok {
		return ix.site + "/{dist:" + name + "}/" + below
	}
	return p
}

// alias adds dir as another path the generation's files are known by: a
// local tree of it, which holds them at the same relative paths.
func (ix *genIndex) alias(dir string) {
	for _, d := range []string{dir, evalOr(dir)} {
		if d != "" && !slices.Contains(ix.roots, d) {
			ix.roots = append(ix.roots, d)
		}
	}
}

// evalOr is dir with its symbolic links resolved, or "" when it cannot be.
func evalOr(dir string) string {
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return ""
	}
	return real
}

// rel returns p relative to the generation, '/'-separated, or false when
// p is outside it.
func (ix *genIndex) rel(p string) (string, bool) {
	p = filepath.Clean(p)
	for _, r := range ix.roots {
		if rest, ok := strings.CutPrefix(p, r+string(filepath.Separator)); ok {
			rest = filepath.ToSlash(rest)
			if ix.lib64 {
				if after, ok := strings.CutPrefix(rest, "lib64/"); ok {
					rest = "lib/" + after
				}
			}
			return rest, true
		}
		if p == r {
			return "", true
		}
	}
	return "", false
}

// value is what the dependency (kind, key) is in this generation.
func (ix *genIndex) value(kind byte, key string) string {
	switch kind {
	case 'f':
		if v, ok := ix.files[key]; ok {
			return v
		}
		if _, ok := ix.children[key]; ok {
			return "dir"
		}
		if strings.Contains(key, "/{dist:") {
			return "-"
		}
		return diskValue(filepath.Join(ix.root, filepath.FromSlash(key)))
	case 'l':
		return ix.lookup(key)
	case 'd':
		kids, ok := ix.children[key]
		if !ok {
			return "-"
		}
		names := make([]string, 0, len(kids))
		for k := range kids {
			names = append(names, k)
		}
		sort.Strings(names)
		return digestList(names)
	case 'q':
		if ix.dists[normalizeDist(key)] {
			return "1"
		}
		return "0"
	case 'a':
		names := make([]string, 0, len(ix.dists))
		for n := range ix.dists {
			names = append(names, n)
		}
		sort.Strings(names)
		return digestList(names)
	case 'p':
		return ix.pth
	case 's':
		return ix.libs
	case 'x':
		return statValue(key)
	case 'e':
		ents, err := os.ReadDir(key)
		if err != nil {
			return errValue(err)
		}
		names := make([]string, len(ents))
		for i, e := range ents {
			names[i] = e.Name()
		}
		return digestList(names)
	}
	return "?"
}

// lookup is what a finder of site-packages would find for the dotted
// module name: the candidates in its parent's directory.
func (ix *genIndex) lookup(name string) string {
	parts := strings.Split(name, ".")
	dir := ix.site
	if len(parts) > 1 {
		dir += "/" + strings.Join(parts[:len(parts)-1], "/")
	}
	base := parts[len(parts)-1]
	var found []string
	for k := range ix.children[dir] {
		if k == base+"/" || strings.HasPrefix(k, base+".") {
			found = append(found, k)
		}
	}
	for k := range ix.children[dir+"/"+base] {
		if strings.HasPrefix(k, "__init__.") {
			found = append(found, base+"/"+k)
		}
	}
	sort.Strings(found)
	return strings.Join(found, "|")
}

// statValue is a file outside the generation as a dependency: its size and
// modification time, "-" when it does not exist.
func statValue(p string) string {
	fi, err := os.Stat(p)
	if err != nil {
		return errValue(err)
	}
	if fi.IsDir() {
		return "dir"
	}
	return fmt.Sprintf("%d:%d", fi.Size(), fi.ModTime().UnixNano())
}

func errValue(err error) string {
	if errors.Is(err, fs.ErrNotExist) {
		return "-"
	}
	return "err"
}

// diskValue is a file of the generation that its plan does not have (the
// skeleton's): its content as read from the generation.
func diskValue(p string) string {
	fi, err := os.Lstat(p)
	if err != nil {
		return errValue(err)
	}
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		t, err := os.Readlink(p)
		if err != nil {
			return "err"
		}
		return "link:" + t
	case fi.IsDir():
		return "dir"
	}
	f, err := os.Open(p)
	if err != nil {
		return errValue(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, bufio.NewReader(f)); err != nil {
		return "err"
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// pseudoFS are the machine's own trees: not dependencies (see above).
func pseudoFS(p string) bool {
	for _, d := range []string{"/proc/", "/sys/", "/dev/"} {
		if strings.HasPrefix(p, d) {
			return true
		}
	}
	return false
}

// smokeRecordFor turns a report into a record whose values are this
// generation's. It returns why not when the import cannot be reused.
func (ix *genIndex) recordFor(module, interp string, r *smokeReport) (*smokeRecord, string) {
	if len(r.Blind) > 0 {
		return nil, r.Blind[0]
	}
	deps := map[[2]string]bool{}
	add := func(kind byte, key string) { deps[[2]string{string(kind), key}] = true }
	lossy := false
	file := func(p string) {
		if p == "" {
			return
		}
		if strings.ContainsRune(p, utf8.RuneError) || !filepath.IsAbs(p) {
			lossy = true
			return
		}
		if rel, ok := ix.rel(p); ok {
			if rel != "" {
				add('f', ix.canonical(rel))
			}
			return
		}
		p = filepath.Clean(p)
		if !pseudoFS(p) {
			add('x', p)
		}
	}
	add('p', "site")
	for _, n := range []string{"sitecustomize", "usercustomize"} {
		add('l', n)
	}
	for _, m := range r.mods {
		inGen := false
		if _, ok := ix.rel(m.file); ok && m.file != "" {
			inGen = true
		}
		for _, p := range m.paths {
			if _, ok := ix.rel(p); ok {
				inGen = true
			}
		}
		if inGen && lookupName(m.name) {
			add('l', m.name)
		}
		if m.file != "" && filepath.IsAbs(m.file) {
			file(m.file)
		}
	}
	for _, n := range r.Missed {
		if lookupName(n) {
			add('l', n)
		}
	}
	for _, p := range r.Opened {
		file(p)
	}
	for _, p := range r.Mapped {
		if _, ok := ix.rel(p); ok {
			add('s', "libs")
		}
		file(p)
	}
	for _, p := range r.Listed {
		if strings.ContainsRune(p, utf8.RuneError) || !filepath.IsAbs(p) {
			lossy = true
			continue
		}
		if rel, ok := ix.rel(p); ok {
			add('d', rel)
		} else if p = filepath.Clean(p); !pseudoFS(p) {
			add('e', p)
		}
	}
	for _, q := range r.Dists {
		if q == "*" {
			add('a', "all")
		} else if q != "" {
			add('q', normalizeDist(q))
		}
	}
	if lossy {
		return nil, "a path it read could not be recorded"
	}
	rec := &smokeRecord{Module: module, Interp: interp}
	for k := range deps {
		kind := k[0][0]
		rec.Deps = append(rec.Deps, smokeDep{Kind: kind, Key: k[1], Value: ix.value(kind, k[1])})
	}
	sort.Slice(rec.Deps, func(i, j int) bool { return depLess(rec.Deps[i], rec.Deps[j]) })
	return rec, ""
}

// holds reports whether rec's import passes in this generation without
// running it, and if not, the first dependency that changed.
func (ix *genIndex) holds(rec *smokeRecord, interp string) (bool, string) {
	if rec.Interp != interp {
		return false, "another interpreter"
	}
	for _, d := range rec.Deps {
		if v := ix.value(d.Kind, d.Key); v != d.Value {
			return false, fmt.Sprintf("%c %s changed", d.Kind, d.Key)
		}
	}
	return true, ""
}
