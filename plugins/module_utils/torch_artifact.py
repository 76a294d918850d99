# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Torch7 prefix artifacts: the key that says which hosts can share one, its name, its manifest.

A Torch7 prefix is only usable on a host like the one that built it: the same distribution
release and C library, the same CPU architecture, the same torch/distro commit, Lua flavour,
package set and CUDA, linked against the same BLAS. Those fields are the artifact's *key*;
its name is derived from the key, so that hosts with equal keys look up the same file and a
glance at the name tells what it holds. The *manifest* (``<name>.json`` beside the tarball)
records the key, the tarball's sha256 and what was built, when and where.

Plain Python 3.8+: it runs on the managed host (torch_artifact_key, torch_install).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re

from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils.host import write_json  # noqa: F401 (re-exported)

MANIFEST_SCHEMA = 1
# Every field that makes two Torch7 prefixes incompatible, in the order names and messages use.
KEY_FIELDS = (
    "distribution",
    "release",
    "glibc",
    "arch",
    "commit",
    "prefix",
    "lua_flavour",
    "packages",
    "cuda",
    "cuda_version",
    "blas",
)
OPENMP_RUNTIMES = re.compile(r"lib(gomp|omp|iomp5)\.so")


def read_os_release(path="/etc/os-release"):
    """``ID`` and the major part of ``VERSION_ID`` (``12`` of Debian 12, ``2023`` of AL2023)."""
    values = {}
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                name, sep, value = line.strip().partition("=")
                if sep:
                    values[name] = value.strip().strip("\"'")
    except OSError:
        pass
    distribution = values.get("ID", "unknown").lower()
    release = values.get("VERSION_ID", "") or values.get("VERSION_CODENAME", "") or "unknown"
    return distribution, release.split(".")[0]


def machine():
    return platform.machine() or "unknown"


def glibc_version():
    try:
        text = os.confstr("CS_GNU_LIBC_VERSION")  # "glibc 2.36"
    except (AttributeError, ValueError, OSError):
        text = None
    if text:
        return text.split()[-1]
    return platform.libc_ver()[1] or "unknown"


def resolve_soname(runner, soname):
    """Path (symlinks followed) that the dynamic linker gives ``soname``, or None."""
    rc, out = runner.capture(["ldconfig", "-p"])
    if rc != 0:
        rc, out = runner.capture(["/sbin/ldconfig", "-p"])
    for line in out.splitlines() if rc == 0 else []:
        name, _sep, target = line.strip().partition(" => ")
        if target and name.split(" (")[0].strip() == soname:
            return os.path.realpath(target.strip())
    return None


def blas_identity(runner, soname):
    """``<soname>:openmp`` or ``<soname>:no-openmp`` (a threading model is part of the ABI that
    matters: Torch's OpenMP and a pthread OpenBLAS fight over the cores), or None when the
    linker cannot resolve ``soname``."""
    path = resolve_soname(runner, soname)
    if path is None:
        return None
    rc, out = runner.capture(["ldd", path])
    threading = "openmp" if rc == 0 and OPENMP_RUNTIMES.search(out) else "no-openmp"
    return f"{soname}:{threading}"


def make_key(distribution, release, glibc, arch, commit, prefix, lua_flavour, packages, cuda, cuda_version, blas):
    return {
        "distribution": distribution,
        "release": str(release),
        "glibc": glibc,
        "arch": arch,
        "commit": commit,
        "prefix": prefix,  # Torch7 prefixes are not relocatable
        "lua_flavour": lua_flavour,
        "packages": list(packages),
        "cuda": bool(cuda),
        "cuda_version": cuda_version if cuda else None,
        "blas": blas,
    }


def key_id(key):
    canonical = json.dumps({field: key.get(field) for field in KEY_FIELDS}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]


def artifact_name(key):
    """``torch7-debian12-x86_64-luajit21-0219027e6c46-cpu-<key id>``: readable, and unique per key."""
    accel = "cuda{}".format(key.get("cuda_version") or "") if key.get("cuda") else "cpu"
    parts = (
        "torch7",
        "{}{}".format(key["distribution"], key["release"]),
        key["arch"],
        key["lua_flavour"].lower(),
        key["commit"][:12],
        accel,
        key_id(key),
    )
    return re.sub(r"[^A-Za-z0-9._-]", "_", "-".join(parts))


def key_differences(expected, actual):
    """Fields where ``actual`` (an artifact's key) differs from ``expected`` (the host's)."""
    return [field for field in KEY_FIELDS if expected.get(field) != actual.get(field)]


def describe_key(key):
    return ", ".join(f"{field}={key.get(field)}" for field in KEY_FIELDS)


def sha256_file(path, chunk=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def make_manifest(key, tarball, record, host, created_at):
    return {
        "schema": MANIFEST_SCHEMA,
        "name": artifact_name(key),
        "key_id": key_id(key),
        "key": key,
        "tarball": os.path.basename(tarball),
        "sha256": sha256_file(tarball),
        "size": os.path.getsize(tarball),
        "prefix": record.get("prefix"),
        "packages": record.get("packages"),
        "build_seconds": record.get("build_seconds"),
        "built_at": record.get("built_at"),
        "built_on": host,
        "created_at": created_at,
    }


def read_manifest(path):
    """The manifest at ``path``; raises ValueError with the reason when it is not one."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read artifact manifest {path}: {exc}") from exc
    missing = [name for name in ("key", "sha256", "name") if not isinstance(data, dict) or name not in data]
    if missing:
        raise ValueError("{} is not an artifact manifest (no {})".format(path, ", ".join(missing)))
    return data
