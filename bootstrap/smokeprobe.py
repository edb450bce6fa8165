# The smoke check's child (DESIGN.md §5.5), run as
#   python -I -c <this> <module>
# with descriptor 3 a pipe to volboot. It imports <module> as `import
# <module>` would, and lets its exceptions end the interpreter the same way.
# While the import runs it records what the import depended on: the
# module names it looked up and no finder found (a finder at the end of
# sys.meta_path), the distributions it asked importlib.metadata for (the
# same finder's find_distributions), the files it opened and the
# directories it listed (an audit hook), and what it did that this cannot
# see into ("blind": it started a process, it removed the finder).
# Once the import returned it adds the modules in sys.modules and the
# files mapped into the process (shared libraries), and writes all of it as
# one JSON object to descriptor 3. volboot turns that into a smoke record.
import sys


def _volboot_setup():
    import os

    state = {"on": True, "missed": [], "opened": [], "listed": [], "dists": [], "blind": []}
    missed, opened, listed, dists, blind = (state[k] for k in ("missed", "opened", "listed", "dists", "blind"))

    class VolbootMissFinder:
        @staticmethod
        def find_spec(name, path=None, target=None):
            if state["on"]:
                missed.append(name)
            return None

        @staticmethod
        def find_distributions(context=None):
            if state["on"]:
                try:
                    name = getattr(context, "name", None)
                    dists.append("*" if name is None else str(name))
                except Exception:
                    blind.append("a distribution query it could not read")
            return iter(())

    sys.meta_path.append(VolbootMissFinder)

    # Listings the import system and importlib.metadata make to look names
    # up: the names are recorded instead (missed, dists, sys.modules).
    lookers = ("importlib._bootstrap_external", "importlib._bootstrap", "importlib.metadata", "importlib_metadata", "zipimport")
    plumbing = ("os", "posixpath", "genericpath", "pathlib", "contextlib", "glob", "fnmatch", "functools")
    getframe = sys._getframe
    getcwd = os.getcwd
    isabs = os.path.isabs
    spawns = ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "pty.spawn")

    def path_of(p):
        if isinstance(p, bytes):
            p = os.fsdecode(p)
        if not isinstance(p, str):
            return None
        if not isabs(p):
            p = os.path.join(getcwd(), p)
        return p

    def hook(event, args):
        # An exception here would be the audited operation's: never let one
        # out.
        if not state["on"]:
            return
        try:
            record(event, args)
        except Exception:
            blind.append("its recorder failed on " + str(event))

    def record(event, args):
        if event == "open":
            p = path_of(args[0]) if args else None
            if p is not None:
                opened.append(p)
        elif event == "os.listdir" or event == "os.scandir":
            p = args[0] if args else None
            if p is None:
                p = "."
            p = path_of(p)
            if p is None:
                return
            f = getframe(2)  # whoever listed: above record and hook
            while f is not None:
                name = f.f_globals.get("__name__", "")
                if name.startswith(lookers):
                    return
                if name.split(".")[0] not in plumbing:
                    break
                f = f.f_back
            listed.append(p)
        elif event == "ctypes.dlopen":
            p = args[0] if args else None
            if isinstance(p, (str, bytes)) and isabs(p):
                opened.append(path_of(p))
        elif event.startswith(spawns):
            blind.append("it started a process (" + event + ")")

    sys.addaudithook(hook)
    state["finder"] = VolbootMissFinder
    return state


_volboot_module = sys.argv.pop(1)  # the module sees sys.argv as `python -c` gives it
try:
    _volboot_state = _volboot_setup()
except Exception:
    # An interpreter without audit hooks: the import is checked all the
    # same, and gets no record.
    _volboot_state = None
__import__(_volboot_module)
# From here on nothing may fail the import, which passed: whatever goes
# wrong only loses the report.
if _volboot_state is not None:
    _volboot_state["on"] = False
    try:
        if not any(f is _volboot_state["finder"] for f in sys.meta_path):
            # Misses after its removal went unrecorded.
            _volboot_state["blind"].append("it took the recorder off sys.meta_path")
    except BaseException:
        _volboot_state = None


def _volboot_report(state):
    modules = []
    for name, m in list(sys.modules.items()):
        try:
            d = object.__getattribute__(m, "__dict__")
        except Exception:
            continue
        f = d.get("__file__")
        p = d.get("__path__")
        paths = []
        if p is not None:
            try:
                paths = [str(x) for x in list(p)]
            except Exception:
                paths = []
        modules.append([str(name), f if isinstance(f, str) else "", paths])
    import json
    mapped = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.rstrip("\n").split(None, 5)
                if len(fields) == 6 and fields[5].startswith("/"):
                    path = fields[5]
                    if path.endswith(" (deleted)"):
                        path = path[: -len(" (deleted)")]
                    mapped.append(path)
    except OSError:
        pass
    report = {
        "v": 1,
        "prefix": sys.prefix,
        "modules": modules,
        "missed": state["missed"],
        "opened": state["opened"],
        "listed": state["listed"],
        "dists": state["dists"],
        "mapped": sorted(set(mapped)),
        "blind": state["blind"],
    }
    try:
        data = json.dumps(report, ensure_ascii=True).encode()
    except (UnicodeError, ValueError):
        data = b'{"v": 1, "blind": ["its report did not encode"]}'
    try:
        with open(3, "wb", closefd=True) as out:
            out.write(data)
    except OSError:
        pass


if _volboot_state is not None:
    try:
        _volboot_report(_volboot_state)
    except BaseException:
        pass
