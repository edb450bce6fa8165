package wheel

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func sampleEntry() *Entry {
	return &Entry{
		Schema: ManifestSchema, SHA256: strings.Repeat("ab", 32), Filename: "demo-1.0-py3-none-any.whl",
		Name: "Demo", Version: "1.0", DistInfo: "demo-1.0.dist-info", Data: "demo-1.0.data", RootIsPurelib: true,
		CacheTag:    "cpython-311",
		EntryPoints: []EntryPoint{{Name: "demo", Module: "demo.cli", Attr: "main"}},
		Files: []File{
			{Path: "demo/__init__.py", Size: 12, Hash: "sha256=abc_-"},
			{Path: "demo/__pycache__/__init__.cpython-311.pyc", Size: 200, Bytecode: true},
			{Path: "demo-1.0.data/scripts/run", Size: 0, Hash: "sha256=x", Exec: true},
			{Path: "demo/odd, name \"quoted\" ü.py", Size: 1, Hash: "sha256=y"},
			{Path: "demo-1.0.dist-info/RECORD", Size: 300},
			{Path: "weird/xb", Size: 1, Exec: true, Bytecode: true},
		},
	}
}

func TestManifestRoundTrip(t *testing.T) {
	e := sampleEntry()
	b, err := encodeManifest(e)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(b), "\n"); n != 1+len(e.Files) {
		t.Fatalf("%d lines, want %d:\n%s", n, 1+len(e.Files), b)
	}
	got, err := decodeManifest(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, e) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, e)
	}
	// A manifest with no files.
	e.Files = nil
	b, _ = encodeManifest(e)
	if got, err := decodeManifest(b); err != nil || len(got.Files) != 0 {
		t.Fatalf("empty: %+v %v", got, err)
	}
}

// Entries written by earlier volboot versions (all JSON) still open.
func TestManifestReadsSchema1(t *testing.T) {
	e := sampleEntry()
	e.Schema = 1
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeManifest(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, e) {
		t.Fatalf("schema 1:\n got %+v\nwant %+v", got, e)
	}
}

func TestManifestErrorsNameTheLine(t *testing.T) {
	good, _ := encodeManifest(sampleEntry())
	lines := strings.SplitAfter(string(good), "\n")
	head := lines[0]
	for name, c := range map[string]struct{ text, want string }{
		"cut short":        {head + "demo/a.py\t1\t-\t-", "does not end with a newline"},
		"no newline":       {strings.TrimSuffix(head, "\n"), "does not end with a newline"},
		"three fields":     {head + "demo/a.py\t1\t-\n", "line 2: 3 fields"},
		"five fields":      {head + "demo/a.py\t1\t-\t-\t-\n", "line 2: more than 4"},
		"bad size":         {head + "demo/a.py\t1\t-\t-\ndemo/b.py\tx\t-\t-\n", "line 3: demo/b.py: size"},
		"negative size":    {head + "demo/a.py\t-1\t-\t-\n", "size"},
		"empty hash":       {head + "demo/a.py\t1\t\t-\n", "empty hash"},
		"bad flags":        {head + "demo/a.py\t1\t-\tbx\n", "flags"},
		"climbing path":    {head + "../a.py\t1\t-\t-\n", "not a file path"},
		"directory":        {head + "demo/\t1\t-\t-\n", "not a file path"},
		"future schema":    {strings.Replace(head, `"schema":2`, `"schema":3`, 1), "schema 3"},
		"files in header":  {strings.Replace(head, `"schema":2`, `"schema":2,"files":[]`, 1), "lists no files"},
		"schema 1 trailer": {strings.Replace(head, `"schema":2`, `"schema":1`, 1) + "x\t1\t-\t-\n", "continues"},
		"not json":         {"garbage\n", "line 1"},
		"cut at line end":  {strings.Join(lines[:len(lines)-2], ""), "5 file lines, the header says 6"},
		"no count":         {strings.Replace(head, `,"file_count":6`, "", 1), "no file_count"},
		"plus size":        {head + "demo/a.py\t+5\t-\t-\n", "size"},
		"padded size":      {head + "demo/a.py\t007\t-\t-\n", "size"},
		"store's name":     {head + ".complete\t1\t-\t-\n", "store's own name"},
		"comma in hash":    {head + "demo/a.py\t1\tsha256=a,b\t-\n", "not alg=urlsafe-base64"},
		"listed twice":     {strings.Replace(head, `"file_count":6`, `"file_count":2`, 1) + "demo/a.py\t1\t-\t-\ndemo/a.py\t1\t-\t-\n", "listed twice"},
		"twice, unsorted":  {strings.Replace(head, `"file_count":6`, `"file_count":3`, 1) + "demo/b.py\t1\t-\t-\ndemo/a.py\t1\t-\t-\ndemo/b.py\t1\t-\t-\n", "demo/b.py listed twice"},
		"huge size":        {head + "demo/a.py\t9999999999999999999\t-\t-\n", "size"},
	} {
		_, err := decodeManifest([]byte(c.text))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want it to say %q", name, err, c.want)
		}
		if want := !strings.Contains(name, "future"); errors.Is(err, ErrBadManifest) != want || errors.Is(err, ErrNewerManifest) == want {
			t.Errorf("%s: error %v: bad manifest %v, newer %v", name, err, errors.Is(err, ErrBadManifest), errors.Is(err, ErrNewerManifest))
		}
	}
	// Paths a manifest cannot hold are refused when writing, not mangled.
	e := sampleEntry()
	e.Files = append(e.Files, File{Path: "demo/tab\there.py"})
	if _, err := encodeManifest(e); err == nil {
		t.Error("a path with a tab was encoded")
	}
}

func FuzzDecodeManifest(f *testing.F) {
	good, _ := encodeManifest(sampleEntry())
	f.Add(good)
	old, _ := json.Marshal(sampleEntry())
	f.Add([]byte(strings.Replace(string(old), `"schema":2`, `"schema":1`, 1)))
	f.Add([]byte("{\"schema\":2,\"file_count\":1}\nx\t0\t-\t-\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := decodeManifest(b)
		if err != nil {
			return
		}
		// Whatever decodes re-encodes to something that decodes the same.
		out, err := encodeManifest(e)
		if err != nil {
			t.Fatalf("decoded %+v but cannot encode it: %v", e, err)
		}
		e2, err := decodeManifest(out)
		if err != nil {
			t.Fatalf("re-encoded manifest does not decode: %v\n%s", err, out)
		}
		e.Schema = ManifestSchema
		for _, x := range []*Entry{e, e2} { // JSON drops empty lists
			if len(x.Files) == 0 {
				x.Files = nil
			}
			if len(x.EntryPoints) == 0 {
				x.EntryPoints = nil
			}
		}
		if !reflect.DeepEqual(e, e2) {
			t.Fatalf("round trip changed the entry:\n%+v\n%+v", e, e2)
		}
	})
}

// BenchmarkDecodeManifest decodes a manifest shaped like a big wheel's:
// 4000 files in nested package directories, half of them bytecode.
func BenchmarkDecodeManifest(b *testing.B) {
	e := sampleEntry()
	e.Files = nil
	for i := range 2000 {
		dir := fmt.Sprintf("synth_pkg/sub%03d/mod%02d", i/40, i%40/8)
		e.Files = append(e.Files,
			File{Path: fmt.Sprintf("%s/file_%04d.py", dir, i), Size: int64(100 + i), Hash: "sha256=QwaPQFSjiZWuT_UaM71sXoluEoKvOdvPIzuy24ljdJE"},
			File{Path: fmt.Sprintf("%s/__pycache__/file_%04d.cpython-311.pyc", dir, i), Size: int64(300 + i), Bytecode: true})
	}
	slices.SortFunc(e.Files, func(a, b File) int { return strings.Compare(a.Path, b.Path) })
	m, err := encodeManifest(e)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(m)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := decodeManifest(m); err != nil {
			b.Fatal(err)
		}
	}
}
