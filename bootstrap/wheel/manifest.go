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

// encodeManifest renders e as a schema 2 manifest.
func encodeManifest(e *Entry) ([]byte, error) {
	head := *e
	head.Schema = ManifestSchema
	head.Files = nil
	b, err := json.Marshal(&head)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	buf.Grow(len(b) + 1 + len(e.Files)*96)
	buf.Write(b)
	buf.WriteByte('\n')
	for _, f := range e.Files {
		if err := checkFile(f); err != nil {
			return nil, err
		}
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

// decodeManifest parses a manifest of schema 1 or 2. Errors name the line.
func decodeManifest(b []byte) (*Entry, error) {
	head, rest, found := bytes.Cut(b, []byte{'\n'})
	var e Entry
	if err := json.Unmarshal(head, &e); err != nil {
		return nil, fmt.Errorf("line 1: %w", err)
	}
	switch e.Schema {
	case 1:
		if found && len(bytes.TrimSpace(rest)) > 0 {
			return nil, errors.New("schema 1 manifest continues after its JSON")
		}
		for _, f := range e.Files {
			if err := checkFile(f); err != nil {
				return nil, err
			}
		}
		return &e, nil
	case ManifestSchema:
	default:
		return nil, fmt.Errorf("line 1: schema %d, want 1 or %d", e.Schema, ManifestSchema)
	}
	if e.Files != nil {
		return nil, errors.New("line 1: a schema 2 header lists no files")
	}
	if !found || (len(rest) > 0 && rest[len(rest)-1] != '\n') {
		return nil, errors.New("manifest does not end with a newline (cut short?)")
	}
	e.Files = make([]File, 0, bytes.Count(rest, []byte{'\n'}))
	for line := 2; len(rest) > 0; line++ {
		var l []byte
		l, rest, _ = bytes.Cut(rest, []byte{'\n'})
		f, err := decodeFileLine(l)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		e.Files = append(e.Files, f)
	}
	return &e, nil
}

func decodeFileLine(l []byte) (File, error) {
	var fields [4][]byte
	for i := range 3 {
		j := bytes.IndexByte(l, '\t')
		if j < 0 {
			return File{}, fmt.Errorf("%d fields, want 4", i+1)
		}
		fields[i], l = l[:j], l[j+1:]
	}
	if bytes.IndexByte(l, '\t') >= 0 {
		return File{}, errors.New("more than 4 fields")
	}
	fields[3] = l
	f := File{Path: string(fields[0])}
	size, err := strconv.ParseInt(string(fields[1]), 10, 64)
	if err != nil || size < 0 {
		return File{}, fmt.Errorf("%s: size %q is not a byte count", f.Path, fields[1])
	}
	f.Size = size
	if h := string(fields[2]); h != "-" {
		if h == "" {
			return File{}, fmt.Errorf("%s: empty hash (want - for none)", f.Path)
		}
		f.Hash = h
	}
	if err := checkFile(f); err != nil {
		return File{}, err
	}
	switch string(fields[3]) {
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
	if f.Hash == "-" || strings.ContainsFunc(f.Hash, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return fmt.Errorf("%s: hash %q", f.Path, f.Hash)
	}
	return nil
}
