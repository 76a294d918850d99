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
  - "Activation: a build writes C(<prefix>/bin/torch-activate) (PATH, LD_LIBRARY_PATH, LUA_PATH, LUA_CPATH like
    upstream's), part of an exported artifact too. The module writes nothing outside O(prefix), O(build_dir),
    O(log_path) and O(export_artifact): RV(activation) is that script's text, which the role
    P(rnn_bootstrap.char_rnn.torch7#role) writes to a login-shell profile script, and it links RV(th) on PATH
    (with check mode and diff)."
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
    The same record and verification apply. Torch prefixes are not relocatable, so the artifact's recorded
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
      - Requires O(artifact).
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
activation:
  description:
    - The activation script (what C(<prefix>/bin/torch-activate) holds) for the installed prefix, for a
      login-shell profile script. In check mode before a build, from the record the build would replace.
  returned: success
  type: str
ansible_facts:
  description: Facts for later tasks.
  returned: success
  type: dict
  contains:
    torch_install:
      description: prefix, th, commit, lua_flavour, blas_library, build_seconds (of the recorded build).
      type: dict
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils import torch_artifact as artifact
from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils import torch_steps as steps
from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils.torch_catalog import (
    DEFAULT_VERIFY_MODULES,
    LUA_FLAVOURS,
)
from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils.torch_probes import detect_blas, disk_full_message
from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils.torch_records import (
    state_path,
    th_path,
    write_progress,
)
from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils.torch_runner import Runner, TorchError

ARGUMENT_SPEC = dict(
    src=dict(type="path", default="/opt/torch"),
    prefix=dict(type="path", default="/opt/torch/install"),
    build_dir=dict(type="path"),
    lua_flavour=dict(type="str", default="LUAJIT21", choices=list(LUA_FLAVOURS)),
    cuda=dict(type="bool", default=False),
    extra_packages=dict(type="list", elements="str", default=[]),
    cmake=dict(type="path", aliases=["cmake_executable"]),
    jobs=dict(type="int"),
    log_path=dict(type="path", default="/var/log/torch-build.log"),
    require_blas=dict(type="bool", default=True),
    verify_modules=dict(type="list", elements="str", default=list(DEFAULT_VERIFY_MODULES)),
    force=dict(type="bool", default=False),
    min_free_mb=dict(type="int", default=0),
    artifact=dict(type="path"),
    artifact_key=dict(type="dict", no_log=False),
    artifact_manifest=dict(type="path"),
    export_artifact=dict(type="path"),
)
REQUIRED_BY = {"artifact_manifest": "artifact"}


def run(params, check_mode, runner):
    """The whole module, without AnsibleModule: returns (ok, result, warnings)."""
    warnings = []
    p = dict(params)
    p["build_dir"] = p.get("build_dir") or os.path.join(p["src"], "build")
    result = {
        "changed": False,
        "built": False,
        "prefix": p["prefix"],
        "th": th_path(p["prefix"]),
        "lua_flavour": p["lua_flavour"],
        "log_path": p["log_path"],
        "state_path": state_path(p["prefix"]),
        "build_seconds": 0.0,
        "reason": "",
    }
    try:
        if p.get("artifact"):
            state, built = artifact.install_artifact(runner, p, check_mode, result, warnings)
        else:
            state, built = steps.build_from_source(runner, p, check_mode, result, warnings)
        exported = False
        if p.get("export_artifact"):
            # After a build that check mode skipped, the export would follow.
            exported = (check_mode and built) or artifact.export(p, state, built, check_mode, result)
    except TorchError as exc:
        result.update(exc.extra)
        result.update(msg=exc.msg, failed_step=exc.step, log_tail=exc.output or "")
        if exc.rc is not None:
            result["rc"] = exc.rc
        return False, result, warnings
    except OSError as exc:
        full = disk_full_message(str(exc), (p["prefix"], p["build_dir"]), p["min_free_mb"])
        result.update(msg=full or f"{type(exc).__name__}: {exc}", failed_step="filesystem", log_tail="")
        return False, result, warnings
    result["built"] = built
    result["changed"] = bool(built or exported)
    # The torch7 role writes it to its profile script (for a check-mode build: from the record before it).
    result["activation"] = steps.activation_script(p["prefix"], (state or {}).get("lua_env"))
    if built and check_mode:
        result["blas_library"] = None
        return True, result, warnings
    result["state"] = state
    result["commit"] = state.get("commit", result.get("commit"))
    result["packages"] = state.get("packages", result.get("packages"))
    result["blas_library"] = state.get("blas_library")
    if not built:
        # Resolved now, not at build time: Debian's alternatives can switch libopenblas.so.0
        # between the pthread and the OpenMP build without a rebuild.
        try:
            live, _out = detect_blas(runner, p["prefix"])
        except TorchError:
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
    return True, result, warnings


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, required_by=REQUIRED_BY, supports_check_mode=True)
    runner = Runner(module)
    follow = not module.check_mode  # a play may follow the build through the progress file
    if follow:
        write_progress(module.params["log_path"], 0, 0, "deciding")
    try:
        ok, result, warnings = run(module.params, module.check_mode, runner)
    finally:
        if follow:
            write_progress(module.params["log_path"], 1, 1, "finished", finished=True)
    for warning in warnings:
        module.warn(warning)
    if ok:
        module.exit_json(**result)
    module.fail_json(**result)


if __name__ == "__main__":
    main()
