package lockgen

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"go.uber.org/zap"

	"github.com/volboot/volboot/bootstrap/pep440"
)

// UVVersion is the uv that `volboot lock` resolves with. Its pylock.toml
// output is what the parser here was written and tested against; another
// version is not used, so that the same manifest locks the same way on
// every machine.
const UVVersion = "0.13.9"

// uvRequirements pins uv by the sha256 of every Linux wheel of UVVersion
// on PyPI (pip's --require-hashes accepts the one matching this machine).
// Taken from PyPI's simple API on 2026-12-07.
const uvRequirements = "uv==" + UVVersion + ` \
    --hash=sha256:56ec37616c00220032fc7b8c9d0ef51367fd0d70d9cd6ddd841660f949f84fed \
    --hash=sha256:5435c5ce14a56431208ca0996416d310f1598e8c2c8ba707688985a16bb82dbe \
    --hash=sha256:7ec1e1dd9b6cb335c301afdf877989df384227313981850755a59561f75e4ab8 \
    --hash=sha256:16963d19594e18d746a70c7fce82237bde4f2cac4cfcf0ca2b84796fe9d0c6e9 \
    --hash=sha256:db5c8df7145c21ffea9c0f74e38823bac3af60cbadf0e26b8633f08627b17bab \
    --hash=sha256:c5dbdb7c8737cd183a9dce95b39cfd1f3d54ec2a27a1bb58f160293f9ba2c805 \
    --hash=sha256:a6e845f387e4ed55bb59342957a9179e24a631fcc7668bda3426ae1cef8ed4b9 \
    --hash=sha256:d7f459fe4fd247d830351c75686d3996ace3c6f3f728eb0e85a30b7ada0cef19 \
    --hash=sha256:ecb6028d79dc96fbeafffe5c8af62a7099487ebc05a701e76714eebcffd06375 \
    --hash=sha256:6d5114bba238adddacb32fb11904f2b3ff4e988f8e9ff0d8d3b5e9822cf836b8 \
    --hash=sha256:6b0c7b9f47a5d011939d61e324d3fe18a8bc155d8dd53add738709a92f290a7c \
    --hash=sha256:a2ee66fe8b6608e1482ab1bde5799da04705c1cb40324c7f66054ecf46ae6e40 \
    --hash=sha256:2c45530751517d6c3bbc69a19473f6effe47cce047bede01ffd8af7ea7b36b25
`

// UV is a uv binary of UVVersion, checked.
type UV struct {
	Path    string
	Version string
	Source  string // "--uv", "PATH", "cache" or "installed"
}

// UVFinder finds uv, or installs it from PyPI into CacheDir.
type UVFinder struct {
	// Explicit names a uv binary (volboot lock --uv). It is used only if
	// it reports UVVersion; otherwise Find fails.
	Explicit string
	// LookPath finds "uv" on PATH; nil means exec.LookPath.
	LookPath func(string) (string, error)
	// CacheDir is volboot's cache directory: uv is installed into
	// CacheDir/uv-<version>.
	CacheDir string
	// Python is the interpreter whose pip installs uv (python3).
	Python string
	Env    []string // environment for pip and uv --version
	Runner Runner
	Log    *zap.Logger
}

// Dir is where Find installs uv.
func (f UVFinder) Dir() string { return filepath.Join(f.CacheDir, "uv-"+UVVersion) }

// Find returns uv at UVVersion: the explicit one, else one on PATH at
// that version, else the copy in the cache directory (its binary checked
// against the wheel's RECORD), else a copy it installs there now with
// `python -m pip install --require-hashes --target`.
func (f UVFinder) Find(ctx context.Context) (UV, error) {
	if f.Log == nil {
		f.Log = zap.NewNop()
	}
	if f.Explicit != "" {
		v, err := f.version(ctx, f.Explicit)
		if err != nil {
			return UV{}, fmt.Errorf("--uv %s: %w", f.Explicit, err)
		}
		if v != UVVersion {
			return UV{}, fmt.Errorf("--uv %s is uv %s, and volboot lock resolves with uv %s only (the pylock.toml output it reads is that version's): leave out --uv to have volboot install uv %s from PyPI into %s, or name a uv %s", f.Explicit, v, UVVersion, UVVersion, f.Dir(), UVVersion)
		}
		return UV{Path: f.Explicit, Version: v, Source: "--uv"}, nil
	}
	look := f.LookPath
	if look == nil {
		look = exec.LookPath
	}
	if p, err := look("uv"); err == nil {
		v, verr := f.version(ctx, p)
		switch {
		case verr != nil:
			f.Log.Info("uv on PATH does not say its version; using volboot's own", zap.String("path", p), zap.Error(verr))
		case v != UVVersion:
			f.Log.Info("uv on PATH is another version; using volboot's own", zap.String("path", p), zap.String("version", v), zap.String("want", UVVersion))
		default:
			return UV{Path: p, Version: v, Source: "PATH"}, nil
		}
	}
	if uv, err := f.cached(ctx); err == nil {
		return uv, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		f.Log.Warn("volboot's copy of uv is damaged; installing it again", zap.String("dir", f.Dir()), zap.Error(err))
		if err := os.RemoveAll(f.Dir()); err != nil {
			return UV{}, fmt.Errorf("remove damaged uv copy: %w", err)
		}
	}
	return f.install(ctx)
}

// cached checks the installed copy: its binary must match the RECORD the
// wheel brought and say UVVersion.
func (f UVFinder) cached(ctx context.Context) (UV, error) {
	bin := filepath.Join(f.Dir(), "bin", "uv")
	if _, err := os.Stat(bin); err != nil {
		return UV{}, err
	}
	if err := verifyInstalled(f.Dir()); err != nil {
		return UV{}, err
	}
	v, err := f.version(ctx, bin)
	if err != nil {
		return UV{}, err
	}
	if v != UVVersion {
		return UV{}, fmt.Errorf("%s is uv %s, want %s", bin, v, UVVersion)
	}
	return UV{Path: bin, Version: v, Source: "cache"}, nil
}

func (f UVFinder) install(ctx context.Context) (UV, error) {
	if f.CacheDir == "" {
		return UV{}, errors.New("no cache directory to install uv into (set XDG_CACHE_HOME or HOME), and no uv " + UVVersion + " on PATH")
	}
	if err := os.MkdirAll(f.CacheDir, 0o755); err != nil {
		return UV{}, fmt.Errorf("install uv: %w", err)
	}
	tmp, err := os.MkdirTemp(f.CacheDir, ".uv-"+UVVersion+"-")
	if err != nil {
		return UV{}, fmt.Errorf("install uv: %w", err)
	}
	defer os.RemoveAll(tmp)
	req := filepath.Join(tmp, "requirements.txt")
	if err := os.WriteFile(req, []byte(uvRequirements), 0o644); err != nil {
		return UV{}, fmt.Errorf("install uv: %w", err)
	}
	target := filepath.Join(tmp, "target")
	python := f.Python
	if python == "" {
		python = "python3"
	}
	f.Log.Info("installing uv from PyPI (once per machine)", zap.String("version", UVVersion), zap.String("dir", f.Dir()), zap.String("python", python))
	cmd := Command{
		Path: python,
		Args: []string{"-m", "pip", "install", "--no-deps", "--only-binary=:all:", "--require-hashes",
			"--no-input", "--disable-pip-version-check", "--no-warn-script-location", "--target", target, "-r", req},
		Env: append(append([]string{}, f.Env...), "PIP_REQUIRE_VIRTUALENV=0", "PIP_NO_INPUT=1"),
	}
	out, err := f.Runner.Run(ctx, cmd)
	if err != nil {
		return UV{}, fmt.Errorf("install uv %s with %s -m pip: %w; or put uv %s on PATH", UVVersion, python, err, UVVersion)
	}
	if out.ExitCode != 0 {
		return UV{}, fmt.Errorf("install uv %s with %s -m pip (exit %d): %s\nput uv %s on PATH (pip install uv==%s) or pass --uv", UVVersion, python, out.ExitCode, lastLines(out.Stderr, 15), UVVersion, UVVersion)
	}
	if err := verifyInstalled(target); err != nil {
		return UV{}, fmt.Errorf("install uv: %w", err)
	}
	bin := filepath.Join(target, "bin", "uv")
	v, err := f.version(ctx, bin)
	if err != nil {
		return UV{}, fmt.Errorf("installed uv: %w", err)
	}
	if v != UVVersion {
		return UV{}, fmt.Errorf("pip installed uv %s, want %s", v, UVVersion)
	}
	if err := os.Rename(target, f.Dir()); err != nil {
		// Another volboot lock may have installed it meanwhile.
		if uv, cerr := f.cached(ctx); cerr == nil {
			return uv, nil
		}
		return UV{}, fmt.Errorf("install uv: %w", err)
	}
	return UV{Path: filepath.Join(f.Dir(), "bin", "uv"), Version: v, Source: "installed"}, nil
}

// version runs `uv --version`.
func (f UVFinder) version(ctx context.Context, bin string) (string, error) {
	out, err := f.Runner.Run(ctx, Command{Path: bin, Args: []string{"--version"}, Env: f.Env})
	if err != nil {
		return "", err
	}
	if out.ExitCode != 0 {
		return "", fmt.Errorf("%s --version: exit %d: %s", bin, out.ExitCode, lastLines(out.Stderr, 3))
	}
	return ParseUVVersion(out.Stdout)
}

// ParseUVVersion reads the version from `uv --version` output, such as
// "uv 0.13.9 (x86_64-unknown-linux-gnu)" or "uv 0.13.9 (abc123 2026-11-30)".
func ParseUVVersion(out []byte) (string, error) {
	line, _, _ := strings.Cut(string(out), "\n")
	fields := strings.Fields(line)
	if len(fields) < 2 || fields[0] != "uv" {
		return "", fmt.Errorf("not uv's version line: %q", clip(line, 80))
	}
	v := fields[1]
	if _, err := pep440.Parse(v); err != nil {
		return "", fmt.Errorf("not uv's version line: %q", clip(line, 80))
	}
	return v, nil
}

// recordEntry is one row of a wheel's RECORD file.
type recordEntry struct {
	Path   string
	SHA256 []byte // nil when the row has no sha256
	Size   int64  // -1 when the row has no size
}

// parseRecord reads a RECORD file (CSV: path, algo=urlsafe-b64 digest,
// size). Rows without a hash (RECORD itself) are kept with a nil SHA256.
func parseRecord(data []byte) ([]recordEntry, error) {
	r := csv.NewReader(bytes.NewReader(data))
	r.FieldsPerRecord = -1
	var out []recordEntry
	for {
		row, err := r.Read()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("RECORD: %w", err)
		}
		if len(row) != 3 || row[0] == "" {
			return nil, fmt.Errorf("RECORD: row %q: want path,hash,size", strings.Join(row, ","))
		}
		e := recordEntry{Path: row[0], Size: -1}
		if row[1] != "" {
			algo, digest, ok := strings.Cut(row[1], "=")
			if !ok {
				return nil, fmt.Errorf("RECORD: %s: hash %q is not algo=digest", row[0], row[1])
			}
			if algo == "sha256" {
				b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(digest, "="))
				if err != nil || len(b) != sha256.Size {
					return nil, fmt.Errorf("RECORD: %s: sha256 %q is not 32 bytes of urlsafe base64", row[0], digest)
				}
				e.SHA256 = b
			}
		}
		if row[2] != "" {
			n, err := strconv.ParseInt(row[2], 10, 64)
			if err != nil || n < 0 {
				return nil, fmt.Errorf("RECORD: %s: size %q", row[0], row[2])
			}
			e.Size = n
		}
		out = append(out, e)
	}
}

// verifyInstalled checks the uv binary under dir (pip --target layout:
// dir/bin/uv, dir/uv-<version>.dist-info/RECORD, which names the binary
// ../../bin/uv) against the sha256 and size its RECORD gives.
func verifyInstalled(dir string) error {
	rec := filepath.Join(dir, "uv-"+UVVersion+".dist-info", "RECORD")
	data, err := os.ReadFile(rec)
	if err != nil {
		return err
	}
	entries, err := parseRecord(data)
	if err != nil {
		return fmt.Errorf("%s: %w", rec, err)
	}
	for _, e := range entries {
		if path.Base(e.Path) != "uv" || path.Base(path.Dir(e.Path)) != "bin" {
			continue
		}
		if e.SHA256 == nil {
			return fmt.Errorf("%s: no sha256 for %s", rec, e.Path)
		}
		bin := filepath.Join(dir, "bin", "uv")
		f, err := os.Open(bin)
		if err != nil {
			return err
		}
		h := sha256.New()
		n, err := io.Copy(h, f)
		f.Close()
		if err != nil {
			return err
		}
		if !bytes.Equal(h.Sum(nil), e.SHA256) || (e.Size >= 0 && n != e.Size) {
			return fmt.Errorf("%s does not match the sha256 and size its wheel's RECORD gives", bin)
		}
		return nil
	}
	return fmt.Errorf("%s names no bin/uv", rec)
}

// lastLines is the end of a program's output, for messages.
func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{"…"}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
