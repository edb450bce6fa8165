package gpu

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// overrideFile is the override schema: exactly these fields.
type overrideFile struct {
	Driver string `json:"driver"`
	CUDA   string `json:"cuda"`
	GPUs   []GPU  `json:"gpus"`
}

// LoadOverride reads and parses the override file at path (EnvOverride).
func LoadOverride(path string) (*Facts, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("gpu probe override (%s): %w", EnvOverride, err)
	}
	return ParseOverride(path, data)
}

// ParseOverride decodes an override file; name is used in errors and in
// Facts.Source. The schema, strictly (unknown or repeated fields, trailing
// data and wrong types are errors naming the file, line and field):
//
//	{
//	  "driver": "570.86.15",            // 2 or 3 numeric parts; "" = no driver
//	  "cuda": "12.8",                   // major.minor; "" = unknown
//	  "gpus": [                         // [] or absent = no GPU
//	    {"name": "NVIDIA A100-SXM4-80GB", "compute_capability": "8.0", "memory_mib": 81920}
//	  ]
//	}
//
// With at least one GPU, driver and cuda are required, and every GPU needs
// a name and a compute capability.
func ParseOverride(name string, data []byte) (*Facts, error) {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("gpu probe override %s: %s", name, fmt.Sprintf(format, args...))
	}
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return nil, fail(`want a JSON object like {"driver": "570.86.15", "cuda": "12.8", "gpus": [...]}`)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var of overrideFile
	if err := dec.Decode(&of); err != nil {
		return nil, fail("%s", describeJSONError(data, err))
	}
	end := int(dec.InputOffset())
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		for end < len(data) && strings.IndexByte(" \t\r\n", data[end]) >= 0 {
			end++
		}
		line, col := lineCol(data, end)
		return nil, fail("line %d column %d: unexpected data after the JSON object", line, col)
	}
	if err := checkDuplicateKeys(data); err != nil {
		return nil, fail("%v", err)
	}
	if of.Driver != "" && !isDriverVersion(of.Driver) {
		return nil, fail("driver %q is not a driver version like \"570.86.15\"", of.Driver)
	}
	if of.CUDA != "" && !isMajorMinor(of.CUDA) {
		return nil, fail("cuda %q is not a CUDA version like \"12.8\"", of.CUDA)
	}
	if len(of.GPUs) > 0 {
		if of.Driver == "" {
			return nil, fail("driver is required when gpus is not empty")
		}
		if of.CUDA == "" {
			return nil, fail("cuda is required when gpus is not empty")
		}
	}
	for i, g := range of.GPUs {
		if strings.TrimSpace(g.Name) == "" || strings.ContainsFunc(g.Name, isControl) {
			return nil, fail("gpus[%d].name %q: want a GPU name like \"NVIDIA A100-SXM4-80GB\"", i, g.Name)
		}
		if !isMajorMinor(g.ComputeCapability) {
			return nil, fail("gpus[%d].compute_capability %q is not a compute capability like \"8.0\"", i, g.ComputeCapability)
		}
		if g.MemoryMiB < 0 {
			return nil, fail("gpus[%d].memory_mib %d is negative", i, g.MemoryMiB)
		}
	}
	f := &Facts{Driver: of.Driver, CUDA: of.CUDA, GPUs: of.GPUs, Source: "override " + name}
	if f.GPUs == nil {
		f.GPUs = []GPU{}
	}
	return f, nil
}

// overrideFingerprint derives the fingerprint from the decoded facts, so
// reformatting the file does not change it.
func overrideFingerprint(f *Facts) string {
	b, _ := json.Marshal(overrideFile{Driver: f.Driver, CUDA: f.CUDA, GPUs: f.GPUs})
	sum := sha256.Sum256(b)
	return "override " + hex.EncodeToString(sum[:12])
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// describeJSONError turns encoding/json errors into "line L column C: ..."
// with the field path when json knows it.
func describeJSONError(data []byte, err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		line, col := lineCol(data, int(se.Offset)-1) // Offset is just past the bad byte
		return fmt.Sprintf("line %d column %d: %v", line, col, se)
	case errors.As(err, &te):
		line, col := lineCol(data, int(te.Offset)-1) // the value's last byte
		field := te.Field
		if field == "" {
			field = "value"
		}
		return fmt.Sprintf("line %d column %d: %s must be %s, not JSON %s", line, col, field, jsonKind(te.Type.Kind().String()), te.Value)
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
		return "unexpected end of file: the JSON object is incomplete"
	}
	msg := err.Error()
	if f, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		return fmt.Sprintf("unknown field %s (allowed: driver, cuda, gpus; in gpus: name, compute_capability, memory_mib)", f)
	}
	return strings.TrimPrefix(msg, "json: ")
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "a string"
	case "int64", "int", "uint64":
		return "an integer"
	case "slice":
		return "an array"
	case "struct":
		return "an object"
	}
	return goKind
}

// lineCol returns the 1-based line and column of the byte at offset off.
func lineCol(data []byte, off int) (int, int) {
	if off > len(data) {
		off = len(data)
	}
	if off < 0 {
		off = 0
	}
	before := data[:off]
	line := bytes.Count(before, []byte("\n")) + 1
	col := off - bytes.LastIndexByte(before, '\n')
	return line, col
}

// checkDuplicateKeys rejects an object that names a key twice, which
// encoding/json accepts silently (the last one wins): in a file written by
// hand, the first is usually the one meant. data must be valid JSON.
func checkDuplicateKeys(data []byte) error {
	type frame struct {
		obj       bool
		keys      map[string]bool
		expectKey bool
		key       string
		next, cur int // array: index of the next and of the current element
	}
	var stack []*frame
	path := func() string {
		var b strings.Builder
		for _, f := range stack {
			if f.obj {
				if b.Len() > 0 {
					b.WriteByte('.')
				}
				b.WriteString(f.key)
			} else {
				fmt.Fprintf(&b, "[%d]", f.cur)
			}
		}
		return b.String()
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return nil // the decoder proper reports syntax errors
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top != nil && top.obj && top.expectKey {
			if k, ok := tok.(string); ok {
				top.key = k
				if top.keys[k] {
					line, col := lineCol(data, int(dec.InputOffset())-1)
					return fmt.Errorf("line %d column %d: field %s appears twice", line, col, path())
				}
				top.keys[k] = true
				top.expectKey = false
				continue
			}
		}
		if d, ok := tok.(json.Delim); ok && (d == '}' || d == ']') {
			stack = stack[:len(stack)-1]
			continue
		}
		// tok starts a value inside top.
		if top != nil {
			if top.obj {
				top.expectKey = true
			} else {
				top.cur = top.next
				top.next++
			}
		}
		if d, ok := tok.(json.Delim); ok {
			stack = append(stack, &frame{obj: d == '{', keys: map[string]bool{}, expectKey: d == '{'})
		}
	}
}
