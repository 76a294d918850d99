#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: torch_install
short_description: Build Torch7 from a torch/distro checkout, non-interactively and idempotently
version_added: "0.1.0"
description:
  - Builds Torch7 from an already cloned U(https://github.com/torch/distro) checkout (O(src), cloned
    with its submodules, for example by M(ansible.builtin.git) with C(recursive=true) at a pinned commit)
    into O(prefix).
  - Does not run upstream's C(install.sh). It replays its steps as a list of build steps, with stdin
    closed so no step can ever wait at a prompt, and never edits anyone's shell rc files.
  - "Steps: CMake configure, build and install of C(exe/luajit-rocks) with C(-DWITH_<lua_flavour>=ON)
    (parallel, C(-j) from the CPU count); C(<prefix>/bin/luarocks path) is read like C(install.sh)
    does; then C(<prefix>/bin/luarocks make <rockspec>) in each needed package directory, in
    dependency order, with C(MAKEFLAGS=-jN) and C(CMAKE_BUILD_PARALLEL_LEVEL=N)."
  - "What is built: the dependency closure of what char-rnn needs (C(torch), C(nn), C(nngraph),
    C(optim), C(luafilesystem), and C(trepl) which provides C(th)), taken from the packages'
    rockspecs plus the runtime requires they omit (optim loads xlua): luafilesystem, penlight,
    luaffi, cwrap, paths, torch, trepl, sys, xlua, moses, nn, graph, nngraph, optim (14 of the 26).
    CUDA rocks (cutorch, cunn) only with O(cuda=true). The Qt packages
    C(install.sh) tries (qtlua, qttorch) are never built; other upstream packages via
    O(extra_packages)."
  - Every step's output is appended to O(log_path) (the previous log is kept as C(<log_path>.1)).
    On failure the module returns RV(failed_step) and RV(log_tail).
  - After building it verifies that C(libTH.so) is linked against a BLAS library (C(ldd)), failing
    when none is found unless O(require_blas=false), and that C(th) can require O(verify_modules).
  - "Idempotent: the build is recorded in C(<prefix>/.rnn_bootstrap-build.json) (source commit from
    C(git rev-parse HEAD), Lua flavour, prefix, package list, CUDA, BLAS library, the Lua environment,
    build seconds). It rebuilds only when one of commit, flavour, prefix, packages or CUDA changes,
    when O(force=true), or when the install is broken: C(th) missing, C(libTH) missing, the require
    check failing, or the record having no BLAS while O(require_blas=true)."
  - A rebuild starts from a fresh build tree (O(build_dir)) and removes O(prefix) if it holds a previous
    record of this module (complete or not). Packages are built from copies under C(<build_dir>/pkgs), so
    the checkout (and its submodules) stays clean for later C(git) updates.
  - "Activation: writes O(profile_script) (PATH, LD_LIBRARY_PATH, LUA_PATH, LUA_CPATH like upstream's
    C(torch-activate), which is also written to C(<prefix>/bin/torch-activate)) and symlinks C(th) as
    O(th_link)."
  - "Progress: while building, C(<log_path>.progress.json) says which step of how many runs (the torch7 role
    reports it while the build runs in the background)."
  - "Toolchain: torch/distro needs CMake 3.x. CMake 4 removed compatibility with CMake < 3.5 and
    refuses policy CMP0026 OLD, which torch7 sets. When the system C(cmake) is 4 or newer, pass
    O(cmake) pointing at a pinned CMake 3.x (for example from PyPI's C(cmake<4) wheel in a private
    virtualenv); the module fails with that advice otherwise. The chosen C(cmake) is put first on the
    PATH of the luarocks steps (through a private directory that holds only a C(cmake) symlink)."
  - "Prebuilt artifacts: with O(artifact) the module installs a tarball of a prefix made by
    O(export_artifact) on a build host instead of building; O(src) is not used then. With O(artifact_key) it checks
    the key and the sha256 against the manifest first (the torch7 role's artifact store does this for a fleet).
    The same record, verification and activation apply. Torch prefixes are not relocatable, so the artifact's recorded
    prefix must equal O(prefix)."
  - "Check mode: computes the decision (up to date, or what would be built and why) and runs no build
    step; read-only probes (C(git rev-parse), C(cmake --version), C(th -e ...)) still run."
author:
  - rnn_bootstrap maintainers (@rnn-bootstrap)
options:
  src:
    description:
      - The torch/distro checkout, with submodules.
    type: path
    default: /opt/torch
  prefix:
    description:
      - Where Torch is installed (C(PREFIX) of upstream's C(install.sh)).
    type: path
    default: /opt/torch/install
  build_dir:
    description:
      - Scratch directory of a build, removed and recreated on every build. Holds the CMake build tree of
        C(exe/luajit-rocks) and, under C(pkgs/), the copies of the packages C(luarocks make) builds in.
      - Defaults to C(<src>/build), where C(install.sh) builds (ignored by the distro's C(.gitignore)).
    type: path
  lua_flavour:
    description:
      - The Lua implementation (C(TORCH_LUA_VERSION) of C(install.sh)).
      - C(LUA51) is for training corpora past LuaJIT's 2 GB heap limit.
    type: str
    default: LUAJIT21
    choices: [LUAJIT21, LUAJIT20, LUA51, LUA52]
  cuda:
    description:
      - Also build the CUDA rocks cutorch and cunn (and CMake 3.6's FindCUDA modules into the prefix, as
        C(install.sh) does). Needs C(nvcc) on PATH, in C(/usr/local/cuda/bin) or C(/opt/cuda/bin).
      - Off by default, even where C(nvcc) exists (upstream auto-detects; this module does not).
    type: bool
    default: false
  extra_packages:
    description:
      - More upstream packages to build on top of the char-rnn set (their dependencies are added).
      - "Known: luafilesystem, penlight, lua-cjson, luaffi, sundown, cwrap, paths, torch, dok, trepl, sys,
        xlua, moses, nn, graph, nngraph, image, optim, gnuplot, env, nnx, threads, argcheck; with
        O(cuda=true) also cutorch, cunn, cudnn."
    type: list
    elements: str
    default: []
  cmake:
    description:
      - Path of the C(cmake) to build with. Default is C(cmake) from PATH, which must be older than 4.
    type: path
    aliases: [cmake_executable]
  jobs:
    description:
      - Parallel build jobs. Default is the number of CPUs this process may use.
    type: int
  log_path:
    description:
      - File receiving the full build log.
    type: path
    default: /var/log/torch-build.log
  require_blas:
    description:
      - Fail when C(libTH) is not linked against a BLAS library (Torch then falls back to very slow
        loops for matrix products).
    type: bool
    default: true
  verify_modules:
    description:
      - Lua modules C(th) must be able to require after a build, and on every run as a health check.
    type: list
    elements: str
    default: [torch, nn, nngraph, optim, lfs]
  profile_script:
    description:
      - Login-shell activation script to write. Empty string to write none.
    type: path
    default: /etc/profile.d/torch.sh
  th_link:
    description:
      - Symlink to C(<prefix>/bin/th), for a C(th) on every PATH. Empty string for none.
    type: path
    default: /usr/local/bin/th
  force:
    description:
      - Rebuild even when the record matches.
    type: bool
    default: false
  min_free_mb:
    description:
      - When a build is needed, MB that the sources, the build tree and the prefix need on each
        filesystem holding them; the module fails before building, naming the filesystem, when
        free space plus what this build already uses there (the checkout, the build tree and a
        prefix of ours, which it replaces) is less. V(0) skips the check.
      - A build that fills the disk anyway fails with C(no space left on device), the filesystem
        and its free space in the failure message.
    type: int
    default: 0
  artifact:
    description:
      - Path on the host of a prefix tarball made by O(export_artifact). Installs it instead of building.
    type: path
  export_artifact:
    description:
      - After a build (or when up to date and the file is missing), write a C(.tar.gz) of the prefix,
        including its build record, to this path on the host.
      - With O(artifact_key), also its manifest C(<name>.json) beside it (C(x.tar.gz) -> C(x.json)) - the key,
        the tarball's sha256 and size, the packages, when and on which host it was built - and the key's id in the
        build record. The key must describe the build (commit, Lua flavour, packages, CUDA, the BLAS soname
        libTH links), or nothing is exported.
    type: path
  artifact_key:
    description:
      - The artifact key of this host, as M(rnn_bootstrap.char_rnn.torch_artifact_key) returns it in C(key).
      - With O(artifact), the install is up to date when the prefix records this key and is healthy (the tarball is
        not read then); otherwise the manifest's key must equal this one and the tarball's sha256 the manifest's,
        or nothing is extracted. The artifact is unpacked beside O(prefix) and swapped in; when the health checks
        then fail, the previous prefix is put back.
      - With O(export_artifact), the key the export is published under.
    type: dict
  artifact_manifest:
    description:
      - The manifest of O(artifact), with O(artifact_key). Default is C(<artifact without .tar.gz>.json).
    type: path
extends_documentation_fragment:
  - rnn_bootstrap.char_rnn.attributes
attributes:
  check_mode:
    support: full
    details: Reports whether it would build and why; runs only read-only probes, never a build step.
  diff_mode:
    support: none
notes:
  - "Build dependencies (Debian): build-essential cmake git libopenblas-dev libreadline-dev
    libncurses-dev unzip (and libjpeg-dev libpng-dev only for O(extra_packages=[image]))."
  - "Debian's default C(libopenblas0) is the pthread build; C(libopenblas0-openmp) provides the OpenMP
    one through the same alternatives. RV(blas_library) is the resolved path, so it shows which."
  - "With O(lua_flavour=LUA51), the real upstream (torch/distro 0219027 on Debian 12) works, but every
    Lua process that loaded C(torch) (which loads luaffi) dies with SIGSEGV at exit, in luaffi's C(cdata_gc) during
    C(lua_close), after the script has finished. The module reports this as a warning, not a failure;
    services running C(th) under LUA51 must not rely on its exit status alone."
  - Runs on the managed host's Python 3.8 or newer.
seealso:
  - name: torch/distro install.sh
    description: The upstream installer whose steps this module replays.
    link: https://github.com/torch/distro/blob/master/install.sh
"""

EXAMPLES = r"""
- name: Clone torch/distro at the pinned commit
  ansible.builtin.git:
    repo: https://github.com/torch/distro.git
    dest: /opt/torch
    version: 0219027e6c4644a0ba5c5bf137c989a0a8c9e01b
    recursive: true

- name: Build Torch7 (CPU, LuaJIT 2.1)
  rnn_bootstrap.char_rnn.torch_install:
    src: /opt/torch
    prefix: /opt/torch/install
  register: torch

- name: Build with Lua 5.1 (corpora past LuaJIT's 2 GB heap) and a pinned CMake 3.x
  rnn_bootstrap.char_rnn.torch_install:
    lua_flavour: LUA51
    cmake: /opt/cmake3/bin/cmake

- name: GPU host
  rnn_bootstrap.char_rnn.torch_install:
    cuda: true

- name: Build once and keep an artifact
  rnn_bootstrap.char_rnn.torch_install:
    export_artifact: /var/cache/torch/torch-prefix.tar.gz

- name: Install that artifact elsewhere instead of building
  rnn_bootstrap.char_rnn.torch_install:
    artifact: /var/cache/torch/torch-prefix.tar.gz
"""

RETURN = r"""
prefix:
  description: The install prefix.
  returned: always
  type: str
  sample: /opt/torch/install
th:
  description: Path of the C(th) interpreter.
  returned: always
  type: str
  sample: /opt/torch/install/bin/th
commit:
  description: Full SHA of the torch/distro commit built (or recorded in the artifact).
  returned: success
  type: str
  sample: 0219027e6c4644a0ba5c5bf137c989a0a8c9e01b
lua_flavour:
  description: The Lua flavour.
  returned: always
  type: str
  sample: LUAJIT21
blas_library:
  description:
    - Resolved path (symlinks followed) of the BLAS library libTH links against, null if none.
    - Resolved on every run, so a switch of Debian's C(libopenblas.so.0) alternative between
      C(openblas-pthread) and C(openblas-openmp) shows without a rebuild; the build record keeps
      the value at build time.
  returned: success
  type: str
  sample: /usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0
build_seconds:
  description: Seconds spent building in this run (0 when nothing was built).
  returned: always
  type: float
  sample: 187.4
packages:
  description: Upstream packages built, in build order.
  returned: success
  type: list
  elements: str
  sample: [luafilesystem, penlight, luaffi, cwrap, paths, torch, trepl, sys, xlua, moses, nn, graph, nngraph, optim]
log_path:
  description: The build log on the host.
  returned: always
  type: str
  sample: /var/log/torch-build.log
reason:
  description: Why it built (or would build in check mode), or why it did not.
  returned: always
  type: str
  sample: "commit changed: 1111111111111111111111111111111111111111 -> 0219027e6c4644a0ba5c5bf137c989a0a8c9e01b"
built:
  description: Whether a build (or artifact install) ran, or would run in check mode.
  returned: always
  type: bool
state_path:
  description: The build record file.
  returned: always
  type: str
  sample: /opt/torch/install/.rnn_bootstrap-build.json
state:
  description: The build record (includes the original build's C(build_seconds) and C(cmake_version)).
  returned: success
  type: dict
cmake:
  description: The CMake used (path and version), when a build ran.
  returned: when built
  type: dict
  sample: {path: /usr/bin/cmake, version: 3.25.1}
steps:
  description: Build steps run with their rc and seconds.
  returned: when built
  type: list
  elements: dict
failed_step:
  description: Name of the step that failed.
  returned: failure
  type: str
  sample: luarocks make torch
log_tail:
  description: Last lines of the build log (or of the failing probe's output).
  returned: failure
  type: str
artifact:
  description: The exported artifact (with O(export_artifact) and O(artifact_key)) - path, manifest, name, sha256.
  returned: when exported with a key
  type: dict
  sample:
    path: /var/cache/rnn_bootstrap/torch7/torch7-debian12-x86_64-luajit21-0219027e6c46-cpu-3f2a9c1b77d0.tar.gz
    manifest: /var/cache/rnn_bootstrap/torch7/torch7-debian12-x86_64-luajit21-0219027e6c46-cpu-3f2a9c1b77d0.json
    name: torch7-debian12-x86_64-luajit21-0219027e6c46-cpu-3f2a9c1b77d0
    sha256: 9f2c0e5bfb1c4b1f0f5b0b7d1f0a7d77c2f0e0d2d1b4c3a2b1a0f9e8d7c6b5a4
ansible_facts:
  description: Facts for later tasks.
  returned: success
  type: dict
  contains:
    torch_install:
      description: prefix, th, commit, lua_flavour, blas_library, build_seconds (of the recorded build).
      type: dict
"""

import contextlib
import datetime
import os
import platform
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils import torch_artifact as ta
from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils import torch_build as tb


def argument_spec():
    return dict(
        src=dict(type="path", default="/opt/torch"),
        prefix=dict(type="path", default="/opt/torch/install"),
        build_dir=dict(type="path"),
        lua_flavour=dict(type="str", default="LUAJIT21", choices=list(tb.LUA_FLAVOURS)),
        cuda=dict(type="bool", default=False),
        extra_packages=dict(type="list", elements="str", default=[]),
        cmake=dict(type="path", aliases=["cmake_executable"]),
        jobs=dict(type="int"),
        log_path=dict(type="path", default="/var/log/torch-build.log"),
        require_blas=dict(type="bool", default=True),
        verify_modules=dict(type="list", elements="str", default=list(tb.DEFAULT_VERIFY_MODULES)),
        profile_script=dict(type="path", default="/etc/profile.d/torch.sh"),
        th_link=dict(type="path", default="/usr/local/bin/th"),
        force=dict(type="bool", default=False),
        min_free_mb=dict(type="int", default=0),
        artifact=dict(type="path"),
        artifact_key=dict(type="dict", no_log=False),
        artifact_manifest=dict(type="path"),
        export_artifact=dict(type="path"),
    )


WARNINGS = []  # collected during one run, handed to AnsibleModule.warn()


class Failure(Exception):
    def __init__(self, msg, **extra):
        super().__init__(msg)
        self.msg = msg
        self.extra = extra


def health_reasons(runner, p, state):
    """Why an install that matches its record is nevertheless broken (empty = healthy)."""
    prefix = p["prefix"]
    th = tb.th_path(prefix)
    if not runner.is_executable(th):
        return [f"install broken: {th} missing"]
    if not tb.find_libth(prefix):
        return [f"install broken: no libTH.so in {prefix}/lib"]
    if p["require_blas"] and not state.get("blas_library"):
        return ["recorded build has no BLAS and require_blas is true"]
    ok, out, warning = tb.check_requires(runner, prefix, p["verify_modules"], state.get("lua_env"))
    if warning:
        WARNINGS.append(warning)
    if not ok:
        last = [line for line in out.strip().splitlines() if line.strip()][-1:] or ["no output"]
        return ["install broken: th cannot require {} ({})".format(", ".join(p["verify_modules"]), last[0][:200])]
    return []


def verify(runner, p):
    """BLAS check after a build/extract; returns (resolved BLAS library, the soname libTH asks for)."""
    try:
        blas, ldd_out = tb.detect_blas(runner, p["prefix"])
    except tb.BuildError as exc:
        raise Failure(exc.msg, failed_step=exc.step, log_tail=exc.output) from exc
    if blas is None and p["require_blas"]:
        raise Failure(
            "libTH is not linked against any BLAS library (install libopenblas-dev and rebuild, "
            "or set require_blas: false)",
            failed_step="verify blas",
            log_tail=ldd_out,
        )
    return blas, tb.parse_ldd_blas(ldd_out)[0]


def verify_requires(runner, p, lua_env):
    ok, out, warning = tb.check_requires(runner, p["prefix"], p["verify_modules"], lua_env)
    if warning:
        WARNINGS.append(warning)
    if not ok:
        raise Failure(
            "th cannot require {}".format(", ".join(p["verify_modules"])),
            failed_step="verify requires",
            log_tail="\n".join(out.splitlines()[-tb.LOG_TAIL_LINES :]),
        )


def activate(p, state, check_mode):
    """profile.d script + th symlink; returns changed."""
    changed = False
    prefix = p["prefix"]
    if p["profile_script"]:
        content = tb.profile_script_content(prefix, state.get("lua_env"))
        changed |= tb.ensure_file(p["profile_script"], content, 0o644, check_mode)
    if p["th_link"]:
        changed |= tb.ensure_symlink(p["th_link"], tb.th_path(prefix), check_mode)
    return changed


def build_from_source(runner, p, check_mode, result):
    """Decide, and build when needed. Returns the record of what is installed."""
    src, prefix = p["src"], p["prefix"]
    if not runner.exists(os.path.join(src, "exe", "luajit-rocks", "CMakeLists.txt")):
        raise Failure(
            f"{src} is not a torch/distro checkout with submodules (no exe/luajit-rocks/CMakeLists.txt); "
            "clone it recursively",
            failed_step="locate sources",
        )
    try:
        commit = tb.source_commit(runner, src)
        packages = tb.resolve_packages(list(tb.CHAR_RNN_PACKAGES) + list(p["extra_packages"]), p["cuda"])
        for name in packages:
            tb.find_rockspec(runner, src, name)  # every package's sources are checked out
    except tb.BuildError as exc:
        raise Failure(exc.msg, failed_step=exc.step, log_tail=exc.output) from exc
    except ValueError as exc:
        raise Failure(str(exc), failed_step="plan") from exc
    desired = tb.desired_record(commit, p["lua_flavour"], prefix, packages, p["cuda"])
    result.update(commit=commit, packages=packages)

    state = tb.read_state(tb.state_path(prefix))
    reasons = ["force: true"] if p["force"] else tb.compare_state(desired, state)
    if not reasons:
        reasons = health_reasons(runner, p, state)
    if not reasons:
        result["reason"] = "up to date: {} built at {}".format(commit[:12], state.get("built_at"))
        return state, False

    result["reason"] = "; ".join(reasons)
    try:
        cmake, version = tb.select_cmake(runner, p["cmake"])
        if p["cuda"] and not tb.find_nvcc(runner):
            raise tb.BuildError("toolchain", "cuda: true but no nvcc on PATH, /usr/local/cuda/bin or /opt/cuda/bin")
    except tb.BuildError as exc:
        raise Failure(exc.msg, failed_step=exc.step, log_tail=exc.output) from exc
    result["cmake"] = {"path": cmake, "version": tb.fmt(version)}
    # Before anything is removed or written: a build that fills the disk fails late and in a mess.
    shortfalls = tb.space_shortfalls(src, p["build_dir"], prefix, p["min_free_mb"])
    if shortfalls:
        raise Failure("; ".join(shortfalls), failed_step="free space")
    if check_mode:
        return state or {}, True

    jobs = p["jobs"] or runner.cpu_count()
    build = tb.Build(runner, p, p["log_path"])
    start = time.monotonic()
    try:
        lua_env = build.execute(cmake, jobs, packages)
    except tb.BuildError as exc:
        result["steps"] = build.steps
        tail = exc.output or tb.log_tail(p["log_path"])
        full = tb.disk_full_message(f"{exc.msg}\n{tail}", (prefix, p["build_dir"]), p["min_free_mb"])
        raise Failure(
            "Torch build failed at step '{}'{} (full log: {})".format(
                exc.step, f": {full}" if full else "", p["log_path"]
            ),
            failed_step=exc.step,
            rc=exc.rc,
            log_tail=tail,
        ) from exc
    result["steps"] = build.steps
    blas, blas_soname = verify(runner, p)
    verify_requires(runner, p, lua_env)
    seconds = round(time.monotonic() - start, 1)
    result["build_seconds"] = seconds

    record = dict(desired)
    record.update(
        schema=tb.STATE_SCHEMA,
        managed_by=tb.MANAGED_BY,
        source="build",
        built_on=platform.node(),
        blas_library=blas,
        blas_soname=blas_soname,
        build_seconds=seconds,
        built_at=now_utc(),
        cmake_version=tb.fmt(version),
        jobs=jobs,
        lua_env=lua_env,
        options={"require_blas": p["require_blas"], "extra_packages": list(p["extra_packages"])},
    )
    tb.ensure_file(
        os.path.join(prefix, "bin", "torch-activate"), tb.profile_script_content(prefix, lua_env), 0o755, False
    )
    tb.write_state(prefix, record)
    return record, True


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
    try:
        manifest = ta.read_manifest(path)
    except ValueError as exc:
        raise Failure(str(exc), failed_step="read artifact") from exc
    host_key = p["artifact_key"]
    differences = ta.key_differences(host_key, manifest["key"])
    if differences:
        raise Failure(
            "artifact {} does not fit this host: {} differ. This host's key: {}. The artifact's key: {}. "
            "Build one on a host like this one (or let torch7_artifact_store hold one per key).".format(
                manifest.get("name"),
                ", ".join(differences),
                ta.describe_key(host_key),
                ta.describe_key(manifest["key"]),
            ),
            failed_step="check artifact key",
            host_key=host_key,
            artifact_key=manifest["key"],
        )
    try:
        actual = ta.sha256_file(p["artifact"])
    except OSError as exc:
        raise Failure(f"cannot read artifact {p['artifact']}: {exc}", failed_step="check artifact checksum") from exc
    if actual != manifest["sha256"]:
        raise Failure(
            "artifact {} is corrupt: sha256 {} but its manifest {} says {}; not installed".format(
                p["artifact"], actual, path, manifest["sha256"]
            ),
            failed_step="check artifact checksum",
        )
    return manifest


def artifact_up_to_date(runner, p, state):
    """Reasons to (re)install, for an install that records the artifact key it came from."""
    wanted = ta.key_id(p["artifact_key"])
    if state is None:
        return ["no build record"]
    if not state or state.get("incomplete"):
        return ["build record unreadable or unfinished"]
    if state.get("artifact_key_id") != wanted:
        return ["installed key {} is not this host's key {}".format(state.get("artifact_key_id"), wanted)]
    return health_reasons(runner, p, state)


def install_artifact(runner, p, check_mode, result):
    """The prebuilt path: same record, verification and activation, no compiler."""
    prefix = p["prefix"]
    state = tb.read_state(tb.state_path(prefix))
    keyed = bool(p.get("artifact_key"))
    if keyed:
        reasons = ["force: true"] if p["force"] else artifact_up_to_date(runner, p, state)
        if not reasons:
            result["reason"] = "up to date: artifact key {} installed".format(state.get("artifact_key_id"))
            result.update(commit=state.get("commit"), packages=state.get("packages"))
            return state, False
        if check_mode and not os.path.exists(p["artifact"]):
            result["reason"] = "; ".join(reasons) + "; would install {}".format(p["artifact"])
            return state or {}, True
        manifest = check_artifact(p)
    try:
        wanted = tb.artifact_state(p["artifact"])
    except tb.BuildError as exc:
        raise Failure(exc.msg, failed_step=exc.step) from exc
    if wanted.get("prefix") != prefix:
        raise Failure(
            "artifact {} was built for prefix {}, not {} (Torch prefixes are not relocatable)".format(
                p["artifact"], wanted.get("prefix"), prefix
            ),
            failed_step="read artifact",
        )
    result.update(commit=wanted.get("commit"), packages=wanted.get("packages"))
    if wanted.get("lua_flavour") != p["lua_flavour"]:
        raise Failure(
            "artifact has lua_flavour {}, not {}".format(wanted.get("lua_flavour"), p["lua_flavour"]),
            failed_step="read artifact",
        )
    if not keyed:
        reasons = ["force: true"] if p["force"] else tb.compare_state(wanted, state)
        if not reasons:
            reasons = health_reasons(runner, p, state)
        if not reasons:
            result["reason"] = "up to date: artifact {} already installed".format(str(wanted.get("commit"))[:12])
            return state, False
    result["reason"] = "; ".join(reasons)
    if check_mode:
        return state or {}, True
    start = time.monotonic()

    def verify_extracted():
        verify(runner, p)
        verify_requires(runner, p, wanted.get("lua_env"))

    try:
        tb.replace_prefix_from_artifact(p["artifact"], prefix, verify_extracted)
    except tb.BuildError as exc:
        raise Failure(exc.msg, failed_step=exc.step, log_tail=exc.output) from exc
    record = tb.read_state(tb.state_path(prefix)) or dict(wanted)
    if keyed:
        record.update(
            source="artifact",
            artifact_name=manifest.get("name"),
            artifact_sha256=manifest.get("sha256"),
            artifact_key_id=ta.key_id(p["artifact_key"]),
            built_on=manifest.get("built_on"),
            installed_at=now_utc(),
        )
        tb.write_state(prefix, record)
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
        with contextlib.suppress(ValueError):
            current = ta.read_manifest(manifest_file)
        fresh = (
            not built
            and current is not None
            and current.get("key_id") == ta.key_id(key)
            and os.path.exists(path)
            and state.get("artifact_key_id") == ta.key_id(key)
        )
        if fresh:
            result["artifact"] = {"path": path, "manifest": manifest_file, "name": current["name"],
                                  "sha256": current["sha256"]}  # fmt: skip
            return False
        if check_mode:
            return True
        if state.get("artifact_key_id") != ta.key_id(key):
            state["artifact_key_id"] = ta.key_id(key)  # recorded in the tarball too: installs inherit it
            tb.write_state(p["prefix"], state)
        tb.create_artifact(p["prefix"], path)
        manifest = ta.make_manifest(key, path, state, platform.node(), now_utc())
        ta.write_json(manifest_file, manifest)
        result["artifact"] = {"path": path, "manifest": manifest_file, "name": manifest["name"],
                              "sha256": manifest["sha256"]}  # fmt: skip
        return True
    if not built and os.path.exists(path):
        return False
    if not check_mode:
        tb.create_artifact(p["prefix"], path)
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
        raise Failure(
            "artifact key does not describe the build in {}: {} differ".format(state.get("prefix"), ", ".join(wrong)),
            failed_step="export artifact",
        )


def now_utc():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def run(params, check_mode, runner):
    """The whole module, without AnsibleModule: returns (ok, result dict)."""
    del WARNINGS[:]
    p = dict(params)
    p["build_dir"] = p.get("build_dir") or os.path.join(p["src"], "build")
    result = {
        "changed": False,
        "built": False,
        "prefix": p["prefix"],
        "th": tb.th_path(p["prefix"]),
        "lua_flavour": p["lua_flavour"],
        "log_path": p["log_path"],
        "state_path": tb.state_path(p["prefix"]),
        "build_seconds": 0.0,
        "reason": "",
    }
    try:
        if p.get("artifact"):
            state, built = install_artifact(runner, p, check_mode, result)
        else:
            state, built = build_from_source(runner, p, check_mode, result)
        activated = False
        if not (check_mode and built):
            activated = activate(p, state, check_mode)
        else:
            # After the (skipped) build the activation would be rewritten from the new record.
            activated = bool(p["profile_script"] or p["th_link"])
        exported = False
        if p.get("export_artifact") and not (check_mode and built):
            exported = export(p, state, built, check_mode, result)
        elif p.get("export_artifact"):
            exported = True
    except Failure as exc:
        result.update(exc.extra)
        result["msg"] = exc.msg
        result.setdefault("log_tail", "")
        return False, result
    except tb.BuildError as exc:
        result.update(msg=exc.msg, failed_step=exc.step, log_tail=exc.output)
        return False, result
    except OSError as exc:
        full = tb.disk_full_message(str(exc), (p["prefix"], p["build_dir"]), p["min_free_mb"])
        result.update(msg=full or f"{type(exc).__name__}: {exc}", failed_step=result.get("failed_step", "filesystem"))
        result.setdefault("log_tail", "")
        return False, result
    result["built"] = built
    result["changed"] = bool(built or activated or exported)
    if built and check_mode:
        result["blas_library"] = None
        return True, result
    result["state"] = state
    result["commit"] = state.get("commit", result.get("commit"))
    result["packages"] = state.get("packages", result.get("packages"))
    result["blas_library"] = state.get("blas_library")
    if not built:
        # Resolved now, not at build time: Debian's alternatives can switch libopenblas.so.0
        # between the pthread and the OpenMP build without a rebuild.
        try:
            live, _out = tb.detect_blas(runner, p["prefix"])
        except tb.BuildError:
            live = None
        result["blas_library"] = live or result["blas_library"]
    result["ansible_facts"] = {
        "torch_install": {
            "prefix": p["prefix"],
            "th": result["th"],
            "commit": result["commit"],
            "lua_flavour": state.get("lua_flavour", p["lua_flavour"]),
            "blas_library": result["blas_library"],
            "build_seconds": state.get("build_seconds"),
        }
    }
    if not built and not check_mode:
        result["msg"] = result["reason"]
    return True, result


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    follow = not module.check_mode  # a play may follow the build through the progress file
    if follow:
        tb.write_progress(module.params["log_path"], 0, 0, "deciding")
    try:
        ok, result = run(module.params, module.check_mode, tb.Runner())
    finally:
        if follow:
            tb.write_progress(module.params["log_path"], 1, 1, "finished", finished=True)
    for warning in WARNINGS:
        module.warn(warning)
    if ok:
        module.exit_json(**result)
    module.fail_json(**result)


if __name__ == "__main__":
    main()
