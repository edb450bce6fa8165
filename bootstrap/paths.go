package bootstrap

import "path/filepath"

// Paths names everything volboot keeps on a volume (DESIGN.md §3). All
// paths derive from Root, so a volume mounted elsewhere works unchanged.
type Paths struct {
	Root string
}

func (p Paths) join(elem ...string) string {
	return filepath.Join(append([]string{p.Root}, elem...)...)
}

// Volboot is the private directory: lock, holder, leases, store, envs, state.
func (p Paths) Volboot() string { return p.join(".volboot") }

// Store holds one unpacked wheel per sha256.
func (p Paths) Store() string { return p.join(".volboot", "store") }

// Trash holds trees waiting to be removed off the boot path (trash
// package).
func (p Paths) Trash() string { return p.join(".volboot", "trash") }

// Smoke holds the smoke check's record of the imports that passed in
// generation id (see smokePassed).
func (p Paths) Smoke(id string) string { return p.join(".volboot", "smoke", id) }

// SmokeRecords holds every generation's smoke records.
func (p Paths) SmokeRecords() string { return p.join(".volboot", "smoke") }

// Envs holds the generations.
func (p Paths) Envs() string { return p.join(".volboot", "envs") }

// Env is generation id's directory.
func (p Paths) Env(id string) string { return p.join(".volboot", "envs", id) }

// Packs holds the generations' packs (locallayout.PackName).
func (p Paths) Packs() string { return p.join(".volboot", "packs") }

// Pack is generation id's pack with this sha256.
func (p Paths) Pack(id, sha string) string { return p.join(".volboot", "packs", id+"-"+sha+".pack") }

// State is the state file.
func (p Paths) State() string { return p.join(".volboot", "state.json") }

// BootRecord is the fast path's record for one boot key: the generation
// that boot runs and its group outcomes.
func (p Paths) BootRecord(key string) string { return p.join(".volboot", "boot", key+".json") }

// BootRecords holds the boot records.
func (p Paths) BootRecords() string { return p.join(".volboot", "boot") }

// InterpCache holds cached interpreter probes.
func (p Paths) InterpCache() string { return p.join(".volboot", "cache", "interp") }

// Wheels is the download cache.
func (p Paths) Wheels() string { return p.join("cache", "wheels") }

// WheelFile is the verified download of the wheel with this sha256.
func (p Paths) WheelFile(sha string) string { return p.join("cache", "wheels", sha+".whl") }

// WheelPart is that download while in progress.
func (p Paths) WheelPart(sha string) string { return p.join("cache", "wheels", sha+".part") }

// Sdists is the download cache of sdists (DESIGN.md §5.7).
func (p Paths) Sdists() string { return p.join("cache", "sdists") }

// SdistFile is the verified download of the sdist with this sha256; ext is
// its archive suffix (.tar.gz, .zip, .tar.bz2).
func (p Paths) SdistFile(sha, ext string) string { return p.join("cache", "sdists", sha+ext) }

// SdistPart is that download while in progress.
func (p Paths) SdistPart(sha string) string { return p.join("cache", "sdists", sha+".part") }

// Hub is HF_HUB_CACHE.
func (p Paths) Hub() string { return p.join("models", "hub") }

// HFHome is HF_HOME (the hub cache is its hub/ subdirectory).
func (p Paths) HFHome() string { return p.join("models") }

// TorchHome is TORCH_HOME.
func (p Paths) TorchHome() string { return p.join("models", "torch") }

// Venv is the convenience link to the newest generation.
func (p Paths) Venv() string { return p.join("venv") }
