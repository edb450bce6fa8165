package wheel_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/volboot/volboot/bootstrap/wheel"
	"github.com/volboot/volboot/bootstrap/wheel/wheeltest"
)

// flash-attn's CUDA wheels are renamed after the build: the filename says
// 2.8.3+cu12torch2.8cxx11abiTRUE, METADATA and the .dist-info say 2.8.3.
// That one difference is accepted; a local label inside that the filename
// lacks, or a different public version, is not.
func TestFilenameLocalLabelTheMetadataLacks(t *testing.T) {
	for _, c := range []struct {
		name, fileVer, distInfo, metaVer, want string
	}{
		{"flash-attn style", "2.8.3+cu12torch2.8cxx11abiTRUE", "flash_attn-2.8.3", "2.8.3", ""},
		{"other public version", "2.8.3+cu12", "flash_attn-2.8.2", "2.8.2", "does not match"},
		{"local label only inside", "2.8.3", "flash_attn-2.8.3", "2.8.3+cu12", "does not match"},
		{"different local labels", "2.8.3+cu12", "flash_attn-2.8.3", "2.8.3+cu11", "does not match"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			spec := wheeltest.Spec{Name: "flash_attn", Version: c.fileVer, DistInfoName: c.distInfo, MetadataVer: c.metaVer,
				Files: []wheeltest.File{{Name: "flash_attn/__init__.py", Data: []byte("__version__ = '2.8.3'\n")}}}
			p, sha, err := wheeltest.Write(dir, spec)
			if err != nil {
				t.Fatal(err)
			}
			st := &wheel.Store{Dir: filepath.Join(dir, "store")}
			os.MkdirAll(st.Dir, 0o755)
			_, err = st.Unpack(context.Background(), wheel.Source{Path: p, Filename: spec.Filename(), SHA256: sha})
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("want an error with %q, got %v", c.want, err)
			}
		})
	}
}
