package wheel

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/csv"
	"fmt"
	"hash"
	"io"
	"strconv"
	"strings"
)

// RecordEntry is one row of a wheel's RECORD file.
type RecordEntry struct {
	Path string // as written in RECORD: relative, '/'-separated
	// Algorithm and Digest are empty for rows without a hash (RECORD itself,
	// signature files). Digest is the raw digest bytes.
	Algorithm string
	Digest    []byte
	Size      int64 // -1 when the row gives no size
}

// newHash returns a hasher for a RECORD hash algorithm. Only algorithms the
// binary distribution format allows (sha256 or stronger) are accepted.
func newHash(alg string) (hash.Hash, error) {
	switch alg {
	case "sha256":
		return sha256.New(), nil
	case "sha384":
		return sha512.New384(), nil
	case "sha512":
		return sha512.New(), nil
	}
	return nil, fmt.Errorf("hash algorithm %q is not allowed (want sha256, sha384 or sha512)", alg)
}

// ParseRecord parses a RECORD file (CSV: path, hash, size). Errors name the
// line. Duplicate paths are refused: a RECORD that lists a file twice with
// two hashes could be made to verify either.
func ParseRecord(data []byte) (map[string]RecordEntry, error) {
	r := csv.NewReader(bytes.NewReader(data))
	r.FieldsPerRecord = -1
	r.ReuseRecord = true
	out := make(map[string]RecordEntry)
	for {
		row, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			// A csv.ParseError names its own line.
			return nil, fmt.Errorf("RECORD: %w", err)
		}
		line, _ := r.FieldPos(0)
		if len(row) == 1 && strings.TrimSpace(row[0]) == "" {
			continue
		}
		if len(row) != 3 {
			return nil, fmt.Errorf("RECORD line %d: %d fields, want 3 (path,hash,size)", line, len(row))
		}
		e := RecordEntry{Path: row[0], Size: -1}
		if e.Path == "" {
			return nil, fmt.Errorf("RECORD line %d: empty path", line)
		}
		if row[1] != "" {
			alg, enc, ok := strings.Cut(row[1], "=")
			if !ok {
				return nil, fmt.Errorf("RECORD line %d: hash %q is not algorithm=digest", line, row[1])
			}
			h, err := newHash(alg)
			if err != nil {
				return nil, fmt.Errorf("RECORD line %d: %w", line, err)
			}
			d, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(enc, "="))
			if err != nil || len(d) != h.Size() {
				return nil, fmt.Errorf("RECORD line %d: digest %q is not urlsafe-base64 %s", line, enc, alg)
			}
			e.Algorithm, e.Digest = alg, d
		}
		if row[2] != "" {
			n, err := strconv.ParseInt(row[2], 10, 64)
			if err != nil || n < 0 {
				return nil, fmt.Errorf("RECORD line %d: size %q is not a non-negative integer", line, row[2])
			}
			e.Size = n
		}
		if _, dup := out[e.Path]; dup {
			return nil, fmt.Errorf("RECORD line %d: %s listed twice", line, e.Path)
		}
		out[e.Path] = e
	}
	return out, nil
}

// EncodeDigest renders a digest the way RECORD writes it.
func EncodeDigest(alg string, digest []byte) string {
	return alg + "=" + base64.RawURLEncoding.EncodeToString(digest)
}

// ParseHeaders parses an RFC 822 style header block (WHEEL, METADATA) up to
// the first blank line. Keys keep their spelling; lookups should use
// strings.EqualFold or the Get helper. Continuation lines (leading space or
// tab) are appended to the previous value.
func ParseHeaders(data []byte) ([][2]string, error) {
	var out [][2]string
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 4<<20)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimRight(sc.Text(), "\r")
		if line == "" {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			if len(out) == 0 {
				return nil, fmt.Errorf("line %d: continuation line before any header", n)
			}
			out[len(out)-1][1] += "\n" + strings.TrimSpace(line)
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok || strings.TrimSpace(k) == "" {
			return nil, fmt.Errorf("line %d: %q is not a 'Key: value' header", n, line)
		}
		out = append(out, [2]string{strings.TrimSpace(k), strings.TrimSpace(v)})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// getHeader returns the first value of key and how many times it appears.
func getHeader(h [][2]string, key string) (string, int) {
	var v string
	n := 0
	for _, kv := range h {
		if strings.EqualFold(kv[0], key) {
			if n == 0 {
				v = kv[1]
			}
			n++
		}
	}
	return v, n
}

// WheelInfo is what volboot needs from a wheel's WHEEL file.
type WheelInfo struct {
	WheelVersion  string
	RootIsPurelib bool
}

// ParseWheelInfo parses a WHEEL file. It refuses a Wheel-Version whose major
// is not 1 (rule 5: a future format may change what files mean) and a
// missing or malformed Root-Is-Purelib.
func ParseWheelInfo(data []byte) (WheelInfo, error) {
	h, err := ParseHeaders(data)
	if err != nil {
		return WheelInfo{}, err
	}
	var wi WheelInfo
	v, n := getHeader(h, "Wheel-Version")
	if n != 1 {
		return wi, fmt.Errorf("Wheel-Version appears %d times, want once", n)
	}
	major, minor, ok := strings.Cut(v, ".")
	if !ok || major != "1" || minor == "" || strings.Trim(minor, "0123456789") != "" {
		return wi, fmt.Errorf("Wheel-Version %q is not supported (want 1.x)", v)
	}
	wi.WheelVersion = v
	p, n := getHeader(h, "Root-Is-Purelib")
	if n != 1 {
		return wi, fmt.Errorf("Root-Is-Purelib appears %d times, want once", n)
	}
	switch strings.ToLower(p) {
	case "true":
		wi.RootIsPurelib = true
	case "false":
	default:
		return wi, fmt.Errorf("Root-Is-Purelib %q is not true or false", p)
	}
	return wi, nil
}

// EntryPoint is one console or GUI script from entry_points.txt.
type EntryPoint struct {
	Name   string // script name, e.g. "pip"
	Module string // e.g. "pip._internal.cli.main"
	Attr   string // e.g. "main" or "Cls.method"; may be empty
	GUI    bool
}

// ParseEntryPoints extracts [console_scripts] and [gui_scripts] from an
// entry_points.txt. Other groups are ignored. Errors name the line.
func ParseEntryPoints(data []byte) ([]EntryPoint, error) {
	var out []EntryPoint
	section := ""
	seen := map[string]int{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 4<<20)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if line[0] == '[' {
			if !strings.HasSuffix(line, "]") {
				return nil, fmt.Errorf("entry_points.txt line %d: malformed section %q", n, line)
			}
			section = strings.TrimSpace(line[1 : len(line)-1])
			continue
		}
		if section != "console_scripts" && section != "gui_scripts" {
			continue
		}
		name, val, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("entry_points.txt line %d: %q is not name = module:attr", n, line)
		}
		name, val = strings.TrimSpace(name), strings.TrimSpace(val)
		if i := strings.IndexByte(val, '['); i >= 0 { // extras do not matter to a launcher
			val = strings.TrimSpace(val[:i])
		}
		mod, attr, _ := strings.Cut(val, ":")
		mod, attr = strings.TrimSpace(mod), strings.TrimSpace(attr)
		if err := checkScriptName(name); err != nil {
			return nil, fmt.Errorf("entry_points.txt line %d: %w", n, err)
		}
		if !isDottedName(mod) || (attr != "" && !isDottedName(attr)) {
			return nil, fmt.Errorf("entry_points.txt line %d: %q is not module:attr", n, val)
		}
		if i, dup := seen[name]; dup {
			out[i] = EntryPoint{} // a later definition wins, as in importlib.metadata
		}
		seen[name] = len(out)
		out = append(out, EntryPoint{Name: name, Module: mod, Attr: attr, GUI: section == "gui_scripts"})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	res := out[:0]
	for _, e := range out {
		if e.Name != "" {
			res = append(res, e)
		}
	}
	return res, nil
}

func checkScriptName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\\\x00") {
		return fmt.Errorf("script name %q is not a plain file name", name)
	}
	return nil
}

func isDottedName(s string) bool {
	if s == "" {
		return false
	}
	for _, part := range strings.Split(s, ".") {
		if part == "" {
			return false
		}
		for i, r := range part {
			ok := r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r > 127 || (i > 0 && r >= '0' && r <= '9')
			if !ok {
				return false
			}
		}
	}
	return true
}
