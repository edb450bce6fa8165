package wheel

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/volboot/volboot/bootstrap/atomicfile"
	"github.com/volboot/volboot/bootstrap/fileops"
)

// Resuming a big entry's bytecode (DESIGN.md §5.4).
//
// Bytecode cannot be checked the way a wheel file is: RECORD does not
// list it, and compiling the source again is the very cost a resumed
// entry means to save (seconds for a torch-sized package, on every try of
// a first boot killed again and again). So the bytecode of an entry with
// more than journalMin sources is compiled in requests of at most
// bytecodeChunk sources, and before the .pyc files of a request are
// written, a journal of them is written beside them: each .pyc's path,
// size and sha256, in one file made by atomicfile (whole or absent, and
// fsynced). A writer that resumes the entry keeps every .pyc whose journal
// says what it must hold and whose bytes hash to that (a .pyc cut short or
// holed by the kill fails and is compiled again), and compiles only the
// rest. The journals are removed once every .pyc is written, before the
// entry is committed: no finished entry carries one, and a kill in between
// costs a recompile, never a wrong file. A wheel may not ship a top-level
// name with the journals' prefix (reservedTop).
//
// Smaller entries keep no journal: compiling their few sources again
// costs less than the journal's create, fsync, rename and unlink. On the
// MooseFS rig a 150-file entry (about 90 sources) took 4-5 s of a kill
// loop's try to compile and write again, against about 25 ms for a journal.

// journalMin is the most sources an entry may have and keep no journal.
const journalMin = 64

// bytecodeChunk is the most sources per compile request of a journaled
// entry: a kill loses at most one request's compile.
const bytecodeChunk = 512

// journalPrefix begins every bytecode journal's name, at an entry's top.
const journalPrefix = ".volboot-bytecode-"

// journalFile is one compiled .pyc as a journal records it.
type journalFile struct {
	Path   string `json:"path"` // relative to the entry, '/'-separated
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// writeJournal records a chunk's .pyc files (pycs[i] for srcs[i]; empty:
// did not compile) under a name of its own.
func writeJournal(tmp, name, cacheTag string, srcs []string, pycs [][]byte) error {
	var files []journalFile
	for i, b := range pycs {
		if len(b) == 0 {
			continue
		}
		sum := sha256.Sum256(b)
		files = append(files, journalFile{Path: pycPath(srcs[i], cacheTag), Size: int64(len(b)), SHA256: hex.EncodeToString(sum[:])})
	}
	data, err := json.Marshal(files)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(tmp, journalPrefix+name+".json"), data, 0o644); err != nil {
		return fmt.Errorf("bytecode journal: %w", err)
	}
	return nil
}

// readJournals returns what the journals a killed writer left in tmp
// record, by .pyc path, and the journals' names. A journal that does not
// parse (its bytes never reached the volume) is ignored: its .pyc files
// are compiled again.
func readJournals(tmp string) (map[string]journalFile, []string) {
	ents, err := os.ReadDir(tmp)
	if err != nil {
		return nil, nil
	}
	out := map[string]journalFile{}
	var names []string
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), journalPrefix) || !e.Type().IsRegular() {
			continue
		}
		names = append(names, e.Name())
		data, err := os.ReadFile(filepath.Join(tmp, e.Name()))
		if err != nil {
			continue
		}
		var files []journalFile
		if json.Unmarshal(data, &files) != nil {
			continue
		}
		for _, f := range files {
			if checkName(f.Path) == nil && f.Size > 0 {
				out[f.Path] = f
			}
		}
	}
	return out, names
}

// removeJournals removes the named journals from tmp.
func removeJournals(tmp string, names []string) error {
	for _, n := range names {
		if err := os.Remove(filepath.Join(tmp, n)); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("bytecode journal: %w", err)
		}
	}
	return nil
}

// keepJournaled checks, many at once, the .pyc of each of srcs that the
// journals record, and returns the Files kept and the indexes of srcs
// still to compile. The bytes of each kept .pyc, as read for the check,
// go to small (when not nil) for the entry's blob.
func keepJournaled(ctx context.Context, tmp, cacheTag string, srcs []string, journal map[string]journalFile, ops *fileops.Scheduler, fsync bool, small *smallFiles) ([]File, []int) {
	keep := make([]bool, len(srcs))
	if len(journal) > 0 {
		g := ops.Group(ctx)
		for i, src := range srcs {
			j, ok := journal[pycPath(src, cacheTag)]
			if !ok {
				continue
			}
			// Its own key: a check only reads, so it is not held to its
			// directory's turn (the kernel serializes creates there, not
			// lookups).
			g.Go(j.Path, func() error {
				var data []byte
				keep[i], data = holdsJournaled(filepath.Join(tmp, filepath.FromSlash(j.Path)), j, fsync, small != nil)
				if keep[i] && small != nil {
					small.add(j.Path, data)
				}
				return nil
			})
		}
		g.Wait()
	}
	var kept []File
	var todo []int
	for i, src := range srcs {
		if keep[i] {
			j := journal[pycPath(src, cacheTag)]
			kept = append(kept, File{Path: j.Path, Size: j.Size, Bytecode: true})
		} else {
			todo = append(todo, i)
		}
	}
	return kept, todo
}

// holdsJournaled reports whether the file at path is a regular file of the
// journal's size and hash (fsynced first under SyncFiles: its writer may
// have died before its own fsync), and returns its bytes when asked to
// keep them. A file that fails is left for the write that follows to
// replace.
func holdsJournaled(path string, j journalFile, fsync, keep bool) (bool, []byte) {
	want, err := hex.DecodeString(j.SHA256)
	if err != nil {
		return false, nil
	}
	var buf *bytes.Buffer
	var w io.Writer // not buf itself: a nil *bytes.Buffer is not a nil io.Writer
	if keep {
		buf = bytes.NewBuffer(make([]byte, 0, j.Size))
		w = buf
	}
	f, st, ok := openHashed(path, j.Size, sha256.New(), want, w)
	if !ok {
		return false, nil
	}
	defer f.Close()
	if st.Mode().Perm() != 0o644 || fsync && f.Sync() != nil {
		return false, nil
	}
	if buf != nil {
		return true, buf.Bytes()
	}
	return true, nil
}

// chunked splits n items into runs of at most size.
func chunked(n, size int) [][2]int {
	var out [][2]int
	for lo := 0; lo < n; lo += size {
		out = append(out, [2]int{lo, min(lo+size, n)})
	}
	return out
}
