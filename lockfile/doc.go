// Package lockfile is the volume lock: it keeps two workers that share a
// network volume from installing onto it at the same time, and it records
// which generation each running worker uses (use-leases) so that gc never
// removes one in use.
//
// Correctness of the volume never depends on this lock (DESIGN.md rule 2):
// downloads and store entries are content addressed, generations immutable.
// The lock saves duplicate work and makes waiting informative and bounded.
// It is nevertheless built so that at most one process believes it holds it
// at any moment, except for the fencing window described below.
//
// # Files
//
// All under the .volboot directory (Options.Dir):
//
//	lock               the flock(2) target (gofrs/flock)
//	claims/<epoch>     one file per epoch, created exclusively; its content is
//	                   the holder record at the moment of the claim; never
//	                   rewritten; the newest few are kept, older ones removed
//	holder.json        the current holder's record, rewritten atomically at
//	                   every heartbeat (phase text, heartbeat counter); on
//	                   release it is rewritten once more with "released": true
//	leases/<worker>.json   use-leases (see HoldLease, ListLeases)
//	flock-unreliable   present once flock was seen letting two processes
//	                   hold it at once (see below)
//
// # Who holds the lock: epochs and exclusive claims
//
// The lock is held in epochs numbered 1, 2, 3, ... The current epoch is the
// highest number present in claims/. A process holds epoch N if and only if
//
//  1. it created claims/N itself with an exclusive create (link(2) of a
//     complete temporary file, which fails with EEXIST when the name exists;
//     on filesystems without hard links, open(O_CREAT|O_EXCL)), and
//  2. at every check since (right after the claim, at each heartbeat, at
//     each Check call) no claim numbered above N exists and claims/N is
//     still there.
//
// Exclusive create is reliable on network filesystems (NFSv3+, FUSE
// filesystems such as MooseFS) even where flock is not. Two waiters that
// decide at the same moment to take over epoch N both try to create
// claims/(N+1); exactly one succeeds, the other goes back to waiting. Old
// claim files are removed only once three newer ones exist and the newest is
// never removed, so a slow process that re-creates a removed name still sees
// the newer epoch in rule 2 and backs off.
//
// # Taking the lock
//
// In flock mode (the default) a contender first tries flock on lock. Having
// it, it takes the next epoch at once when the lock is free (no epoch yet, or
// the current holder released) or when the current holder's record says it
// held flock (the kernel or file server dropped that flock, so the holder is
// gone). A holder that runs without flock (lease-only) is judged by the
// record rules below even when flock is free. If some other process claims an
// epoch while this contender holds flock, the contender falls back to the
// record rules.
//
// A filesystem may let two clients hold flock at once. Then a newcomer takes
// over a live holder at once, and the next would take over from it, and so
// on. To stop that, a holder fenced by a newcomer whose record says it took
// flock while the holder still held flock (and a contender that sees such a
// claim appear while it holds flock) writes .volboot/flock-unreliable,
// whether the holder learns of the takeover at a heartbeat or at a Check. While
// that marker exists, contenders still take flock but never treat a free
// flock as proof that the holder is gone; people remove the marker once the
// filesystem is fixed. ReadHolder reports it.
//
// In lease-only mode, and in flock mode once flock is ours but the holder ran
// without it (or flock proved unreliable), the record rules decide:
//
//   - free: no epoch yet, or holder.json names the current epoch and says
//     released → take the next epoch;
//   - dead: the record's host, boot id and pid namespace equal ours and its
//     pid is gone, a zombie, or now belongs to a process with another start
//     time (pid reuse; our own pid with our own start time is alive) → take
//     over at once, with a warning;
//   - stale: the observed state (current epoch and the bytes of holder.json)
//     has not changed for the TTL, measured by this process's own monotonic
//     clock; no timestamp written by another host is ever compared with ours
//     → take over, with a warning.
//
// In flock mode while flock is refused, someone holds it: a live holder, a
// contender about to claim, or a dead client whose lock lingers on the file
// server (MooseFS kept it 300 s after the client died, and its master keeps
// a vanished client's session a day by default: every later contender
// would otherwise wait a TTL). A
// released record may then be claimed at once (the exclusive claim decides
// against a contender that holds flock); otherwise only the stale rule
// applies. Either way the new holder runs without flock, and its record
// says so (has_flock false).
//
// # Fencing
//
// The holder's heartbeat goroutine re-reads claims/ before it renames each
// new holder record into place; when a newer epoch exists it stops writing,
// closes Lost and reports ErrFenced. Check does the same test synchronously:
// callers must call it right before each write that matters (committing
// state, flipping the venv link). A process paused between Check and its
// write (SIGSTOP, a VM freeze) can still write once after resuming: that
// window is inherent to advisory locking on a shared filesystem, which is why
// the volume's correctness rests on content addressing, and why Epoch is
// exposed so that records written under the lock can carry it as a fencing
// token.
//
// A holder that cannot refresh its record for half the TTL (volume gone,
// persistent I/O errors) also reports ErrFenced: by then waiters may judge it
// stale, and it cannot prove otherwise.
//
// # Caches
//
// The rules assume that a file created or renamed by one client is visible
// to others within a small fraction of the TTL. NFS attribute and lookup
// caches (actimeo, lookupcache) can delay that; the default TTL of 60 s
// exceeds their defaults. Fencing is detected as promptly as the filesystem
// shows the newer claim.
//
// # Modes
//
// ModeFlock (default) falls back to ModeLeaseOnly by itself when flock fails
// with ENOSYS, ENOLCK or EOPNOTSUPP. ModeLeaseOnly never calls flock.
// ModeOff takes no lock at all and writes nothing; it exists only so that
// crash and concurrency tests can prove the volume stays correct without the
// lock. The command line maps VOLBOOT_LOCK_MODE (EnvMode) through ParseMode;
// this package never reads the environment itself.
//
// # Use-leases
//
// leases/<worker-id>.json names the generation a running worker uses; the
// Lease rewrites it every few seconds. A lister cannot wait a TTL to see
// whether a lease changes, so ListLeases compares each lease file's
// modification time with that of a file it has just created in the same
// directory: both stamps come from the volume's clock, never from two hosts'
// clocks. Older than the TTL, or written on this machine by a process that
// is gone, means dead. See ListLeases.
//
// # Read-only use
//
// ReadHolder reads the holder record without locking or writing anything,
// for status.
package lockfile
