"""Answers the Go oracle test's questions with pip's vendored packaging.

Reads one JSON object on stdin, writes one JSON object on stdout. Every
answer is a plain JSON value; an exception becomes the string "error" so
that "both refuse" is a comparable answer.
"""
import json
import platform
import sys
import sysconfig

from pip._vendor.packaging import tags, _manylinux, _musllinux
from pip._vendor.packaging.markers import Marker
from pip._vendor.packaging.requirements import Requirement
from pip._vendor.packaging.specifiers import Specifier, SpecifierSet
from pip._vendor.packaging.utils import canonicalize_name, parse_wheel_filename
from pip._vendor.packaging.version import Version


def guarded(fn):
    def run(*args):
        try:
            return fn(*args)
        except Exception:
            return "error"
    return run


@guarded
def version(s):
    return str(Version(s))


@guarded
def compare(a, b):
    va, vb = Version(a), Version(b)
    return (va > vb) - (va < vb)


@guarded
def specifier(s):
    return str(Specifier(s))


@guarded
def contains(spec, v, pre):
    if pre is None:
        return SpecifierSet(spec).contains(Version(v))
    return SpecifierSet(spec).contains(Version(v), prereleases=pre)


@guarded
def marker(m, env):
    return Marker(m).evaluate(env)


@guarded
def requirement(s):
    r = Requirement(s)
    return {
        "name": r.name,
        "extras": sorted(canonicalize_name(e) for e in r.extras),
        "specifier": str(r.specifier),
        "url": r.url or "",
        "has_marker": r.marker is not None,
    }


@guarded
def wheel(filename):
    name, ver, build, tagset = parse_wheel_filename(filename)
    return {
        "name": str(name),
        "version": str(ver),
        "build": "".join(str(b) for b in build),
        "tags": sorted(str(t) for t in tagset),
    }


def interpreter_facts():
    """What volboot's probe collects, computed the way a probe would."""
    ft = "t" if sysconfig.get_config_var("Py_GIL_DISABLED") else ""
    dbg = "d" if sysconfig.get_config_var("Py_DEBUG") else ""
    libc, ver = platform.libc_ver()
    major = minor = 0
    if ver:
        major, minor = (int(x) for x in ver.split(".")[:2])
    return {
        "Implementation": sys.implementation.name,
        "Major": sys.version_info[0],
        "Minor": sys.version_info[1],
        "ABI": "cp%d%d%s%s" % (sys.version_info[0], sys.version_info[1], ft, dbg),
        "Platform": sysconfig.get_platform().replace(".", "_").replace("-", "_"),
        "Machine": platform.machine(),
        "Libc": libc,
        "LibcMajor": major,
        "LibcMinor": minor,
    }


def synthetic(case):
    """packaging's own generators for a machine we are not on."""
    glibc = tuple(case["glibc"]) if case.get("glibc") else (-1, -1)
    musl = case.get("musl")
    _manylinux._get_glibc_version = lambda: glibc
    _musllinux._get_musl_version = (
        lambda exe: _musllinux._MuslVersion(*musl) if musl else None
    )
    is32 = case.get("is32", False)
    if is32:
        # packaging inspects the running binary's ELF header for i686/armv7l;
        # for a machine we are not on, take the probe's word for it.
        _manylinux._have_compatible_abi = lambda arch: True
    real = tags.sysconfig.get_platform
    tags.sysconfig.get_platform = lambda: case["platform"]
    try:
        plats = list(tags._linux_platforms(is_32bit=is32))
    finally:
        tags.sysconfig.get_platform = real
    pyver = tuple(case["python"])
    if case["impl"] == "cpython":
        # Let packaging derive the ABIs itself, debug build included.
        real_var = tags._get_config_var
        debug = case["abi"].endswith("d")
        tags._get_config_var = lambda name, warn=False: (
            debug if name == "Py_DEBUG" else real_var(name, warn))
        try:
            out = list(tags.cpython_tags(pyver, platforms=plats))
        finally:
            tags._get_config_var = real_var
        out += list(tags.compatible_tags(pyver, platforms=plats))
    else:
        interp = "pp%d%d" % pyver
        out = list(tags.generic_tags(interp, abis=[case["abi"]], platforms=plats))
        out += list(tags.compatible_tags(pyver, interpreter="pp3", platforms=plats))
    return [str(t) for t in out]


def main():
    q = json.load(sys.stdin)
    supported = list(tags.sys_tags())
    index = {}
    for i, t in enumerate(supported):
        index.setdefault(t, i)

    @guarded
    def rank(filename):
        found = [index[t] for t in parse_wheel_filename(filename)[3] if t in index]
        return min(found) if found else -1

    json.dump({
        "versions": [version(s) for s in q["versions"]],
        "compare": [compare(a, b) for a, b in q["compare"]],
        "specifiers": [specifier(s) for s in q["specifiers"]],
        "contains": [contains(s, v, p) for s, v, p in q["contains"]],
        "markers": [marker(m, e) for m, e in q["markers"]],
        "requirements": [requirement(s) for s in q["requirements"]],
        "wheels": [wheel(f) for f in q["wheels"]],
        "rank": [rank(f) for f in q["rank"]],
        "facts": interpreter_facts(),
        "sys_tags": [str(t) for t in supported],
        "synthetic": [synthetic(c) for c in q["synthetic"]],
    }, sys.stdout)


main()
