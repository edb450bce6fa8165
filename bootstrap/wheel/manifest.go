package wheel

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// The .complete manifest of a store entry, schema 2, is one line of JSON
// holding every field of the Entry but its files, then one line per file:
//
//	<path> TAB <size> TAB <hash, or -> TAB <flags> LF
//
// flags is "-" or some of "x" (executable) and "b" (bytecode volboot
// compiled), in that order. Paths need no escaping: checkName refuses
// control characters in wheel entries, and volboot's own bytecode paths
// derive from them.
//
// Why not all JSON (schema 1): a boot that builds a generation reads every
// entry's manifest, and encoding/json decoded the 98k file records of an
// F5-sized stack (10 MB) at 100 MB/s, a tenth of a second of a one-second
// rebuild. Schema 1 manifests are still read.

// ErrBadManifest marks a manifest that was read but does not hold a valid
// entry of a schema this volboot knows. Unpack replaces such entries.
var ErrBadManifest = errors.New("not a valid store manifest")

// ErrNewerManifest marks a manifest of a later schema, written by a newer
// volboot sharing the volume. It is left alone.
var ErrNewerManifest = errors.New("store manifest of a newer volboot")

// manifestHeader is what the JSON line holds besides the Entry: the number
// of file lines, so a manifest cut at a line boundary is caught.
type manifestHeader struct {
	*Entry
	FileCount *int `json:"file_count,omitempty"`
}

// encodeManifest renders e as a schema 2 manifest.
func encodeManifest(e *Entry) ([]byte, error) {
	head := *e
	head.Schema = ManifestSchema
	head.Files = nil
	n := len(e.Files)
	b, err := json.Marshal(manifestHeader{Entry: &head, FileCount: &n})
	if err != nil {
		return nil, err
	}
	if err := checkFiles(e.Files); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	buf.Grow(len(b) + 1 + len(e.Files)*96)
	buf.Write(b)
	buf.WriteByte('\n')
	for _, f := range e.Files {
		buf.WriteString(f.Path)
		buf.WriteByte('\t')
		buf.WriteString(strconv.FormatInt(f.Size, 10))
		buf.WriteByte('\t')
		if f.Hash == "" {
			buf.WriteByte('-')
		} else {
			buf.WriteString(f.Hash)
		}
		buf.WriteByte('\t')
		switch {
		case f.Exec && f.Bytecode:
			buf.WriteString("xb")
		case f.Exec:
			buf.WriteByte('x')
		case f.Bytecode:
			buf.WriteByte('b')
		default:
			buf.WriteByte('-')
		}
		buf.WriteByte('\n')
	}
	return buf.Bytes(), nil
}

// decodeManifest parses a manifest of schema 1 or 2. Errors name the line
// and wrap ErrBadManifest, or ErrNewerManifest for a later schema.
func decodeManifest(b []byte) (*Entry, error) {
	e, err := parseManifest(b)
	if err != nil && !errors.Is(err, ErrNewerManifest) {
		err = fmt.Errorf("%w: %w", ErrBadManifest, err)
	}
	return e, err
}

func parseManifest(b []byte) (*Entry, error) {
	head, rest, found := bytes.Cut(b, []byte{'\n'})
	var e Entry
	h := manifestHeader{Entry: &e}
	if err := json.Unmarshal(head, &h); err != nil {
		return nil, fmt.Errorf("line 1: %w", err)
	}
	switch {
	case e.Schema == 1:
		if found && len(bytes.TrimSpace(rest)) > 0 {
			return nil, errors.New("schema 1 manifest continues after its JSON")
		}
		if err := checkFiles(e.Files); err != nil {
			return nil, err
		}
		return &e, nil
	case e.Schema > ManifestSchema:
		return nil, fmt.Errorf("%w: schema %d, this volboot reads 1 to %d (upgrade volboot)", ErrNewerManifest, e.Schema, ManifestSchema)
	case e.Schema != ManifestSchema:
		return nil, fmt.Errorf("line 1: schema %d, want 1 or %d", e.Schema, ManifestSchema)
	}
	if e.Files != nil {
		return nil, errors.New("line 1: a schema 2 header lists no files")
	}
	if h.FileCount == nil || *h.FileCount < 0 {
		return nil, errors.New("line 1: no file_count")
	}
	if !found || (len(rest) > 0 && rest[len(rest)-1] != '\n') {
		return nil, errors.New("manifest does not end with a newline (cut short?)")
	}
	// The file lines are sliced out of one string: a path or hash is a
	// substring of it, not an allocation of its own.
	text := string(rest)
	e.Files = make([]File, 0, min(*h.FileCount, len(text)/8))
	sorted := true
	for line := 2; len(text) > 0; line++ {
		var l string
		l, text, _ = strings.Cut(text, "\n")
		f, err := decodeFileLine(l)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		if n := len(e.Files); n > 0 && e.Files[n-1].Path >= f.Path {
			sorted = false
		}
		e.Files = append(e.Files, f)
	}
	if len(e.Files) != *h.FileCount {
		return nil, fmt.Errorf("%d file lines, the header says %d (cut short?)", len(e.Files), *h.FileCount)
	}
	// volboot writes the lines in path order, which rules out a path
	// listed twice without a set of them.
	if !sorted {
		if err := checkUnique(e.Files); err != nil {
			return nil, err
		}
	}
	return &e, nil
}

// checkFiles checks each record and that no path is listed twice.
func checkFiles(files []File) error {
	for _, f := range files {
		if err := checkFile(f); err != nil {
			return err
		}
	}
	return checkUnique(files)
}

func checkUnique(files []File) error {
	seen := make(map[string]bool, len(files))
	for _, f := range files {
		if seen[f.Path] {
			return fmt.Errorf("file %s listed twice", f.Path)
		}
		seen[f.Path] = true
	}
	return nil
}

func decodeFileLine(l string) (File, error) {
	var fields [4]string
	for i := range 3 {
		j := strings.IndexByte(l, '\t')
		if j < 0 {
			return File{}, fmt.Errorf("%d fields, want 4", i+1)
		}
		fields[i], l = l[:j], l[j+1:]
	}
	if strings.IndexByte(l, '\t') >= 0 {
		return File{}, errors.New("more than 4 fields")
	}
	fields[3] = l
	f := File{Path: fields[0]}
	size, ok := parseSize(fields[1])
	if !ok {
		return File{}, fmt.Errorf("%s: size %q is not a byte count", f.Path, fields[1])
	}
	f.Size = size
	if h := fields[2]; h != "-" {
		if h == "" {
			return File{}, fmt.Errorf("%s: empty hash (want - for none)", f.Path)
		}
		f.Hash = h
	}
	if err := checkFile(f); err != nil {
		return File{}, err
	}
	switch fields[3] {
	case "-":
	case "x":
		f.Exec = true
	case "b":
		f.Bytecode = true
	case "xb":
		f.Exec, f.Bytecode = true, true
	default:
		return File{}, fmt.Errorf("%s: flags %q, want -, x, b or xb", f.Path, fields[3])
	}
	return f, nil
}

// parseSize reads a byte count as strconv.FormatInt writes it: decimal
// digits, no sign, no leading zero, at most 18 digits (no overflow).
func parseSize(s string) (int64, bool) {
	if s == "" || len(s) > 18 || (s[0] == '0' && len(s) > 1) {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// checkFile holds a manifest's file record to what unpacking can produce:
// a wheel-relative file path and a hash that fits its field.
func checkFile(f File) error {
	if err := checkName(f.Path); err != nil {
		return fmt.Errorf("path %q: not a file path (%v)", f.Path, err)
	}
	if strings.HasSuffix(f.Path, "/") {
		return fmt.Errorf("path %q: not a file path (a directory)", f.Path)
	}
	if f.Size < 0 {
		return fmt.Errorf("%s: negative size %d", f.Path, f.Size)
	}
	if top, _, _ := strings.Cut(f.Path, "/"); top == CompleteName {
		return fmt.Errorf("path %q: the store's own name", f.Path)
	}
	if f.Hash != "" && !validHash(f.Hash) {
		return fmt.Errorf("%s: hash %q is not alg=urlsafe-base64", f.Path, f.Hash)
	}
	return nil
}

// validHash reports whether h has RECORD's shape: an algorithm name, "=",
// and a urlsafe base64 digest (padding allowed).
func validHash(h string) bool {
	alg, digest, ok := strings.Cut(h, "=")
	if !ok || alg == "" || digest == "" {
		return false
	}
	for i := 0; i < len(alg); i++ {
		if hashChars[alg[i]]&algChar == 0 {
			return false
		}
	}
	for i := 0; i < len(digest); i++ {
		if hashChars[digest[i]]&digestChar == 0 {
			return false
		}
	}
	return true
}

// hashChars classes bytes for validHash: a table, because a manifest's
// hashes are checked at every generation build (57k of them for an
// F5-sized stack) and compound comparisons made that a third of the read.
var hashChars = func() (t [256]uint8) {
	for c := range 256 {
		switch {
		case c >= 'a' && c <= 'z' || c >= '0' && c <= '9':
			t[c] = algChar | digestChar
		case c == '_':
			t[c] = algChar | digestChar
		case c >= 'A' && c <= 'Z' || c == '-' || c == '=':
			t[c] = digestChar
		}
	}
	return t
}()

const (
	algChar    = 1 << iota // may appear in a hash's algorithm name
	digestChar             // may appear in its urlsafe base64 digest
)
