// Package atomicfile makes files and directories appear under their final
// name complete or not at all (DESIGN.md rule 1).
//
// Every temporary name it makes lives in the same directory as the final
// name (so the rename is atomic on one filesystem) and carries the writer's
// identity: host, process id and a random suffix. Code that cleans up after
// dead writers (sync, repair, gc) recognises such names with ParseTempName
// and decides from the host and pid whether the writer may still be alive.
//
// Durability: Write and File.Commit fsync the data before the rename and the
// directory after it, so a name that survives a crash names complete bytes.
// None of these functions lock anything; two writers racing for one final
// name each rename complete content, and the last rename wins. Callers that
// name content by its hash make that race harmless.
package atomicfile

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// tempMarker separates the final base name from the writer identity in a
// temporary name: ".<base>.vbtmp.<host>.<pid>.<process><random>".
const tempMarker = ".vbtmp."

// processToken tells this process from an earlier one with the same host
// name and pid: a restarted container keeps its host name, and volboot as
// its ENTRYPOINT is pid 1 every time. Without it, what the last
// incarnation left would look like this process's own work in progress.
var processToken = func() string {
	var r [4]byte
	_, _ = rand.Read(r[:])
	return hex.EncodeToString(r[:])
}()

// TempName returns a fresh temporary name (not yet created) in the directory
// of final, carrying this process's identity.
func TempName(final string) string {
	dir, base := filepath.Split(final)
	host, _ := os.Hostname()
	host = HostToken(host)
	var r [6]byte
	_, _ = rand.Read(r[:])
	return filepath.Join(dir, "."+base+tempMarker+host+"."+strconv.Itoa(os.Getpid())+"."+processToken+hex.EncodeToString(r[:]))
}

// Mine reports whether ti names a temporary made by this very process.
func Mine(ti TempInfo) bool {
	host, _ := os.Hostname()
	return ti.Host == HostToken(host) && ti.PID == os.Getpid() && ti.Process == processToken
}

// HostToken is how a host name appears in temporary names (TempInfo.Host):
// without the dots that separate their fields.
func HostToken(host string) string {
	if host == "" {
		return "unknown"
	}
	return strings.NewReplacer(".", "_", "/", "_").Replace(host)
}

// TempInfo describes who made a temporary name.
type TempInfo struct {
	Final string // the base name the writer meant to produce
	Host  string
	PID   int
	// Process tells processes of one host and pid apart (see Mine); empty
	// in names older volboots made.
	Process string
}

// ParseTempName reports whether base (a file name without directory) is a
// temporary name made by TempName, and by whom.
func ParseTempName(base string) (TempInfo, bool) {
	if !strings.HasPrefix(base, ".") {
		return TempInfo{}, false
	}
	i := strings.LastIndex(base, tempMarker)
	if i < 1 {
		return TempInfo{}, false
	}
	rest := strings.Split(base[i+len(tempMarker):], ".")
	if len(rest) != 3 {
		return TempInfo{}, false
	}
	pid, err := strconv.Atoi(rest[1])
	if err != nil || pid <= 0 {
		return TempInfo{}, false
	}
	ti := TempInfo{Final: base[1:i], Host: rest[0], PID: pid}
	if len(rest[2]) == 2*(4+6) {
		ti.Process = rest[2][:8]
	}
	return ti, true
}

// Write writes data to path atomically with the given permissions.
func Write(path string, data []byte, perm fs.FileMode) error {
	f, err := Create(path, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Abort()
		return fmt.Errorf("write %s: %w", f.Name(), err)
	}
	return f.Commit()
}

// WriteVolatile writes data to path atomically but without fsync: readers
// never see a partial file, yet after a crash of the machine the file may
// hold its previous content or be missing. For records that are rewritten
// often and mean nothing after a crash (use-lease heartbeats, files in a
// process's own temporary directory), where an fsync per write would cost
// a network round trip for nothing.
func WriteVolatile(path string, data []byte, perm fs.FileMode) error {
	tmp := TempName(path)
	if err := os.WriteFile(tmp, data, perm); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("rename %s to %s: %w", tmp, path, err)
	}
	return nil
}

// File is a temporary file that becomes path on Commit. Until then no reader
// can see it under path.
type File struct {
	*os.File
	final string
	done  bool
}

// Create opens a new temporary file beside path.
func Create(path string, perm fs.FileMode) (*File, error) {
	tmp := TempName(path)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return nil, fmt.Errorf("create temporary file for %s: %w", path, err)
	}
	return &File{File: f, final: path}, nil
}

// Commit fsyncs the file, renames it to its final name and fsyncs the
// directory. On error the temporary file is removed and path is untouched.
func (f *File) Commit() error {
	if f.done {
		return errors.New("atomicfile: Commit after Commit or Abort")
	}
	f.done = true
	tmp := f.File.Name()
	if err := f.File.Sync(); err != nil {
		f.File.Close()
		os.Remove(tmp)
		return fmt.Errorf("fsync %s: %w", tmp, err)
	}
	if err := f.File.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, f.final); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("rename %s to %s: %w", tmp, f.final, err)
	}
	return SyncDir(filepath.Dir(f.final))
}

// Abort closes and removes the temporary file. It is safe after Commit.
func (f *File) Abort() {
	if f.done {
		return
	}
	f.done = true
	f.File.Close()
	os.Remove(f.File.Name())
}

// RemoveTree removes the file or directory at path so that it disappears
// from its final name at once: it is renamed to a temporary name in the
// same directory first, then removed. A removal that is killed halfway
// leaves a temporary name (a dead writer's leftover, which sync and gc
// remove), never a half-emptied tree under the final name where a reader
// could take it for something incomplete and trip over it. A path that does
// not exist is not an error.
func RemoveTree(path string) error {
	aside := TempName(path)
	if err := os.Rename(path, aside); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("set %s aside for removal: %w", path, err)
	}
	if err := os.RemoveAll(aside); err != nil {
		return fmt.Errorf("remove %s (set aside as %s): %w", path, aside, err)
	}
	return nil
}

// SyncDir fsyncs a directory so that renames and creations in it survive a
// crash. Filesystems that cannot fsync a directory (EINVAL) are tolerated.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}

// SyncFS flushes the whole filesystem holding dir with one syncfs(2): far
// cheaper than an fsync per file when thousands of files were just written
// (a store entry, a generation). Filesystems without it (ENOSYS, EINVAL)
// are tolerated: only durability across a host crash is lost, which
// `volboot status --verify` detects.
func SyncFS(dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	defer unix.Close(fd)
	if err := unix.Syncfs(fd); err != nil && !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("syncfs %s: %w", dir, err)
	}
	return nil
}
