package pack

import (
	"path"
	"strings"
)

// What a pack takes (DESIGN.md §5.8). The local layout packs a
// generation's small files and leaves its big ones on the volume; the
// store writes, with each entry, a blob of the files of that entry a pack
// may take (wheel/smallblob.go), so that packing reads one file per entry
// instead of one per small file. Both judge by the rule below, which lives
// here, below both of them.

// DefaultThreshold is the size from which a file stays on the volume
// rather than going into a pack, unless AlwaysPacked says otherwise.
const DefaultThreshold = 256 << 10

// AlwaysPacked reports whether the file at p (a '/'-separated path in a
// generation or in a store entry) goes into a pack whatever its size:
// Python sources, bytecode, stubs and .pth files, and anything in a
// .dist-info directory. (A generation's scripts directory and the files
// volboot writes are packed too; who packs knows where those are.)
func AlwaysPacked(p string) bool {
	if strings.Contains(p, ".dist-info/") {
		return true
	}
	switch path.Ext(p) {
	case ".py", ".pyc", ".pyi", ".pth":
		return true
	}
	return false
}
