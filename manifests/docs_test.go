package manifests

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// The README's example manifest is valid and uses every key a manifest
// may hold, so that it can be read as the reference.
func TestReadmeManifestIsCompleteAndValid(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var example string
	for _, m := range regexp.MustCompile("(?s)```toml\n(.*?)```").FindAllStringSubmatch(string(readme), -1) {
		if strings.Contains(m[1], "[[group]]") {
			example = m[1]
		}
	}
	if example == "" {
		t.Fatal("README.md has no example manifest (a ```toml block with a [[group]])")
	}
	m, err := Parse("README.md", []byte(example))
	if err != nil {
		t.Fatalf("README.md's example manifest: %v", err)
	}
	if len(m.Indexes) == 0 || len(m.Groups) < 2 || len(m.Models) == 0 || len(m.Groups[1].When) == 0 {
		t.Errorf("the example should show an index, a required and an optional group with a condition, and a model: %+v", m)
	}
	// Every key of every table, from the decoder's own structs.
	var keys func(prefix string, typ reflect.Type)
	keys = func(prefix string, typ reflect.Type) {
		for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice {
			typ = typ.Elem()
		}
		if typ.Kind() != reflect.Struct {
			return
		}
		for i := range typ.NumField() {
			f := typ.Field(i)
			key := f.Tag.Get("toml")
			// A table is [key] or [[key]] at the start of a line; a
			// value is key = ….
			pattern := `(?m)^` + regexp.QuoteMeta(key) + ` = `
			if ft := f.Type; ft.Kind() == reflect.Pointer && ft.Elem().Kind() == reflect.Struct || ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct {
				pattern = `(?m)^\[\[?` + regexp.QuoteMeta(key) + `\]\]?`
			}
			if !regexp.MustCompile(pattern).MatchString(example) {
				t.Errorf("README.md's example manifest lacks %s%s", prefix, key)
			}
			keys(prefix+key+".", f.Type)
		}
	}
	keys("", reflect.TypeOf(rawManifest{}))
}

// An unknown key points at the manifest reference in the repository's own
// design document, which names every key.
func TestUnknownKeyCitesTheRepositorysDesign(t *testing.T) {
	_, err := Parse("w.toml", []byte("name = \"x\"\nnmae = \"y\"\n"))
	if err == nil || !strings.Contains(err.Error(), "docs/DESIGN.md §13") {
		t.Fatalf("error %v should cite docs/DESIGN.md §13", err)
	}
	design, err := os.ReadFile("../docs/DESIGN.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(design), "## 13. Formats\n\n**Manifest**") {
		t.Error("docs/DESIGN.md §13 no longer starts with the manifest format")
	}
}
