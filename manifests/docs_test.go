package manifests

import (
	"os"
	"strings"
	"testing"
)

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
