# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Torch7 prefix artifacts: the key that says which hosts can share one, its name, its manifest,
and the tarball itself - its export after a build and its install instead of a build.

A Torch7 prefix is only usable on a host like the one that built it: the same distribution
release and C library, the same CPU architecture, the same torch/distro commit, Lua flavour,
package set and CUDA, linked against the same BLAS. Those fields are the artifact's *key*;
its name is derived from the key, so that hosts with equal keys look up the same file and a
glance at the name tells what it holds. The *manifest* (``<name>.json`` beside the tarball)
records the key, the tarball's sha256 and what was built, when and where.

Plain Python 3.8+: it runs on the managed host (torch_artifact_key, torch_install). Commands go through the
runner (torch_runner.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import re
import shutil
import tarfile
import time

from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils import torch_probes as probes
from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils import torch_records as records
from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils.host import write_json
from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils.torch_records import (
    STATE_FILE,
    state_path,
    write_state,
)
from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils.torch_runner import TorchError
from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils.torch_steps import remove_prefix

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
    """The manifest at ``path``; raises TorchError with the reason when it is not one."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError) as exc:
        raise TorchError("read artifact", f"cannot read artifact manifest {path}: {exc}") from exc
    missing = [name for name in ("key", "sha256", "name") if not isinstance(data, dict) or name not in data]
    if missing:
        raise TorchError("read artifact", "{} is not an artifact manifest (no {})".format(path, ", ".join(missing)))
    return data


# --------------------------------------------------------------------------- install and export


def manifest_path(p):
    """The manifest beside a tarball: ``x.tar.gz`` -> ``x.json``."""
    if p.get("artifact_manifest"):
        return p["artifact_manifest"]
    base = p["artifact"]
    for suffix in (".tar.gz", ".tgz"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base + ".json"


def check_artifact(p):
    """sha256 and key of the artifact against the manifest and this host; returns the manifest.

    Nothing is extracted before both agree: a corrupt or mismatched artifact is never installed."""
    path = manifest_path(p)
    manifest = read_manifest(path)
    host_key = p["artifact_key"]
    differences = key_differences(host_key, manifest["key"])
    if differences:
        raise TorchError(
            "check artifact key",
            "artifact {} does not fit this host: {} differ. This host's key: {}. The artifact's key: {}. "
            "Build one on a host like this one (or let torch7_artifact_store hold one per key).".format(
                manifest.get("name"),
                ", ".join(differences),
                describe_key(host_key),
                describe_key(manifest["key"]),
            ),
            host_key=host_key,
            artifact_key=manifest["key"],
        )
    try:
        actual = sha256_file(p["artifact"])
    except OSError as exc:
        raise TorchError("check artifact checksum", f"cannot read artifact {p['artifact']}: {exc}") from exc
    if actual != manifest["sha256"]:
        raise TorchError(
            "check artifact checksum",
            "artifact {} is corrupt: sha256 {} but its manifest {} says {}; not installed".format(
                p["artifact"], actual, path, manifest["sha256"]
            ),
        )
    return manifest


def artifact_up_to_date(runner, p, state, warnings):
    """Reasons to (re)install, for an install that records the artifact key it came from."""
    wanted = key_id(p["artifact_key"])
    if state is None:
        return ["no build record"]
    if not state or state.get("incomplete"):
        return ["build record unreadable or unfinished"]
    if state.get("artifact_key_id") != wanted:
        return ["installed key {} is not this host's key {}".format(state.get("artifact_key_id"), wanted)]
    return probes.health_reasons(runner, p["prefix"], state, p["require_blas"], p["verify_modules"], warnings)


def install_artifact(runner, p, check_mode, result, warnings):
    """The prebuilt path instead of a build: same record and verification, no compiler.
    Returns (the record of what is installed, whether it installed)."""
    prefix = p["prefix"]
    state = records.read_state(state_path(prefix))
    keyed = bool(p.get("artifact_key"))
    if keyed:
        reasons = ["force: true"] if p["force"] else artifact_up_to_date(runner, p, state, warnings)
        if not reasons:
            result["reason"] = "up to date: artifact key {} installed".format(state.get("artifact_key_id"))
            result.update(commit=state.get("commit"), packages=state.get("packages"))
            return state, False
        if check_mode and not os.path.exists(p["artifact"]):
            result["reason"] = "; ".join(reasons) + "; would install {}".format(p["artifact"])
            return state or {}, True
        manifest = check_artifact(p)
    wanted = artifact_state(p["artifact"])
    if wanted.get("prefix") != prefix:
        raise TorchError(
            "read artifact",
            "artifact {} was built for prefix {}, not {} (Torch prefixes are not relocatable)".format(
                p["artifact"], wanted.get("prefix"), prefix
            ),
        )
    result.update(commit=wanted.get("commit"), packages=wanted.get("packages"))
    if wanted.get("lua_flavour") != p["lua_flavour"]:
        raise TorchError(
            "read artifact", "artifact has lua_flavour {}, not {}".format(wanted.get("lua_flavour"), p["lua_flavour"])
        )
    if not keyed:
        reasons = ["force: true"] if p["force"] else records.compare_state(wanted, state)
        if not reasons:
            reasons = probes.health_reasons(runner, prefix, state, p["require_blas"], p["verify_modules"], warnings)
        if not reasons:
            result["reason"] = "up to date: artifact {} already installed".format(str(wanted.get("commit"))[:12])
            return state, False
    result["reason"] = "; ".join(reasons)
    if check_mode:
        return state or {}, True
    start = time.monotonic()

    def verify_extracted():
        probes.verify(runner, prefix, wanted.get("lua_env"), p["require_blas"], p["verify_modules"], warnings)

    replace_prefix_from_artifact(p["artifact"], prefix, verify_extracted)
    record = records.read_state(state_path(prefix)) or dict(wanted)
    if keyed:
        record.update(
            source="artifact",
            artifact_name=manifest.get("name"),
            artifact_sha256=manifest.get("sha256"),
            artifact_key_id=key_id(p["artifact_key"]),
            built_on=manifest.get("built_on"),
            installed_at=records.now_utc(),
        )
        write_state(prefix, record)
    result["build_seconds"] = round(time.monotonic() - start, 1)
    return record, True


def export(p, state, built, check_mode, result):
    """Write the prefix tarball (and, with a key, its manifest); returns changed."""
    path = p["export_artifact"]
    key = p.get("artifact_key")
    if key:
        check_key_matches_build(key, state)
        manifest_file = manifest_path(dict(p, artifact=path, artifact_manifest=None))
        current = None
        with contextlib.suppress(TorchError):
            current = read_manifest(manifest_file)
        fresh = (
            not built
            and current is not None
            and current.get("key_id") == key_id(key)
            and os.path.exists(path)
            and state.get("artifact_key_id") == key_id(key)
        )
        if fresh:
            result["artifact"] = {"path": path, "manifest": manifest_file, "name": current["name"],
                                  "sha256": current["sha256"]}  # fmt: skip
            return False
        if check_mode:
            return True
        if state.get("artifact_key_id") != key_id(key):
            state["artifact_key_id"] = key_id(key)  # recorded in the tarball too: installs inherit it
            write_state(p["prefix"], state)
        create_artifact(p["prefix"], path)
        manifest = make_manifest(key, path, state, platform.node(), records.now_utc())
        write_json(manifest_file, manifest)
        result["artifact"] = {"path": path, "manifest": manifest_file, "name": manifest["name"],
                              "sha256": manifest["sha256"]}  # fmt: skip
        return True
    if not built and os.path.exists(path):
        return False
    if not check_mode:
        create_artifact(p["prefix"], path)
    return True


def check_key_matches_build(key, state):
    """The key a build is exported under must describe that build, or hosts would trust a lie."""
    found = {
        "commit": state.get("commit"),
        "prefix": state.get("prefix"),
        "lua_flavour": state.get("lua_flavour"),
        "packages": state.get("packages"),
        "cuda": bool(state.get("cuda")),
    }
    wrong = [name for name, value in found.items() if key.get(name) != value]
    blas_soname = str(key.get("blas") or "").split(":", maxsplit=1)[0]
    linked = os.path.basename(state.get("blas_soname") or "")
    if linked and blas_soname != linked:
        wrong.append(f"blas ({linked} linked, key says {blas_soname})")
    if wrong:
        raise TorchError(
            "export artifact",
            "artifact key does not describe the build in {}: {} differ".format(state.get("prefix"), ", ".join(wrong)),
        )


# --------------------------------------------------------------------------- the tarball


def artifact_state(path):
    """State record stored at the top of a prefix tarball (``./.rnn_bootstrap-build.json``)."""
    try:
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                name = member.name[2:] if member.name.startswith("./") else member.name
                if name == STATE_FILE and member.isfile():
                    handle = tar.extractfile(member)
                    return json.loads(handle.read().decode("utf-8"))
    except (OSError, tarfile.TarError, ValueError) as exc:
        raise TorchError("read artifact", f"cannot read artifact {path}: {exc}") from exc
    raise TorchError("read artifact", f"artifact {path} has no {STATE_FILE} at its top")


def extract_artifact(path, dest, prefix=None):
    """Replace ``dest`` with the tarball's content (members must stay inside it; absolute
    symlinks may point only into ``prefix``, the path the content will live at, default ``dest``)."""
    prefix = prefix or dest
    if os.path.exists(dest):
        remove_prefix(dest)
    os.makedirs(dest)
    real_dest = os.path.realpath(dest)
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            target = os.path.realpath(os.path.join(dest, member.name))
            if target != real_dest and not target.startswith(real_dest + os.sep):
                raise TorchError("extract artifact", f"unsafe member {member.name} in {path}")
            if member.issym() and os.path.isabs(member.linkname) and not member.linkname.startswith(prefix):
                raise TorchError("extract artifact", f"unsafe symlink {member.name} in {path}")
        if hasattr(tarfile, "tar_filter"):  # Python 3.12+, and security backports to 3.8+
            tar.extractall(dest, filter="tar")  # members checked above as well
        else:
            tar.extractall(dest)  # members checked above


def replace_prefix_from_artifact(path, prefix, verify):
    """Install the tarball at ``prefix`` so that a failed check leaves the previous prefix in place.

    Extracts next to ``prefix``, swaps it in (Torch prefixes are not relocatable, so ``verify``
    must run at the real path), and swaps the old one back when ``verify`` raises."""
    staging, old = prefix + ".rnn_bootstrap-new", prefix + ".rnn_bootstrap-old"
    for leftover in (staging, old):
        if os.path.lexists(leftover):
            shutil.rmtree(leftover)
    try:
        extract_artifact(path, staging, prefix)
    except (OSError, tarfile.TarError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise TorchError("extract artifact", f"cannot extract {path}: {exc}") from exc
    except TorchError:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    had_prefix = os.path.lexists(prefix)
    if had_prefix:
        os.rename(prefix, old)
    os.rename(staging, prefix)
    try:
        verify()
    except BaseException:
        shutil.rmtree(prefix, ignore_errors=True)
        if had_prefix:
            os.rename(old, prefix)
        raise
    if had_prefix:
        shutil.rmtree(old, ignore_errors=True)


def create_artifact(prefix, path):
    """Tar ``prefix`` (state file included) for hosts that install instead of building."""
    parent = os.path.dirname(path)
    if parent and not os.path.isdir(parent):
        os.makedirs(parent)
    tmp = path + ".tmp"
    with tarfile.open(tmp, "w:gz") as tar:
        tar.add(prefix, arcname=".")
    os.replace(tmp, path)
