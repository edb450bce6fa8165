# volboot's PEP 517 frontend. It runs in the throwaway build environment,
# in the unpacked project's directory, with the interpreter in isolated
# mode:
#
#   python -I driver.py BACKEND BACKEND_PATH_JSON OUT_DIR INFO_FILE
#
# It imports the build backend, asks it what else it needs to build a wheel
# (get_requires_for_build_wheel) and writes that to INFO_FILE at once, so
# that a failed build can be explained; then builds the wheel into OUT_DIR
# and writes INFO_FILE again with the wheel's file name. It uses nothing
# newer than Python 3.8.
import importlib
import json
import os
import sys


def write_info(path, info):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(info, f)
    os.replace(tmp, path)


def main():
    spec, backend_path, out, info_file = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
    project = os.getcwd()
    for p in reversed(backend_path):
        sys.path.insert(0, os.path.join(project, p))
    mod_name, _, obj_path = spec.partition(":")
    try:
        backend = importlib.import_module(mod_name)
    except ImportError as e:
        sys.stderr.write("volboot: cannot import the build backend %s: %s\n" % (mod_name, e))
        return 3
    for part in obj_path.split(".") if obj_path else []:
        backend = getattr(backend, part)
    info = {"backend": spec, "requires": []}
    hook = getattr(backend, "get_requires_for_build_wheel", None)
    if hook is not None:
        info["requires"] = list(hook({}))
    write_info(info_file, info)
    info["wheel"] = backend.build_wheel(out, {})
    write_info(info_file, info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
