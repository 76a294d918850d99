# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""torch_install's build: Torch7 from a torch/distro checkout, as a list of explicit steps.

Replicates what torch/distro's ``install.sh`` does, without its prompt, its shell-rc editing,
its CUDA auto-detection and its Qt packages:

1. cmake configure + build + install of ``exe/luajit-rocks`` with ``-DWITH_<FLAVOUR>=ON``;
2. ``<prefix>/bin/luarocks make <rockspec>`` in each needed package directory, in
   dependency order (the order install.sh uses), then ``<prefix>/bin/torch-activate``;
3. verification (torch_probes.verify): libTH links a BLAS, ``th`` can require the needed modules.

``build_from_source`` decides whether a build is needed (the record, the health of the prefix)
and runs it. Plain Python 3.8+ (it runs on the managed host); commands go through the runner.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import time

from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils import torch_probes as probes
from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils import torch_records as records
from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils.torch_catalog import (
    CATALOG_BY_NAME,
    find_rockspec,
    packages_for,
)
from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils.torch_records import (
    MANAGED_BY,
    STATE_SCHEMA,
    state_path,
    write_progress,
    write_state,
)
from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils.torch_runner import TorchError

# Where install.sh lets CMake look for an OpenBLAS built from source (/opt/OpenBLAS).
OPENBLAS_DIRS = ("/opt/OpenBLAS/include", "/opt/OpenBLAS/lib")
CONDA = re.compile(r"conda[2-9]?")

# --------------------------------------------------------------------------- the steps


class Build:
    """One build of torch/distro at ``src`` into ``prefix``."""

    def __init__(self, runner, params, log_path):
        self.runner = runner
        self.p = params
        self.log_path = log_path
        self.steps = []
        self.log = None

    # The steps, as data (name, argv, cwd). Unit tests read this list.
    def plan(self, cmake, jobs, packages):
        src, prefix, build_dir = self.p["src"], self.p["prefix"], self.p["build_dir"]
        luarocks = os.path.join(prefix, "bin", "luarocks")
        steps = [
            (
                "configure luajit-rocks",
                [
                    cmake,
                    os.path.join(src, "exe", "luajit-rocks"),
                    f"-DCMAKE_INSTALL_PREFIX={prefix}",
                    "-DCMAKE_BUILD_TYPE=Release",
                    "-DWITH_{}=ON".format(self.p["lua_flavour"]),
                ],
                build_dir,
            ),
            ("build luajit-rocks", [cmake, "--build", ".", "--", f"-j{jobs}"], build_dir),
            ("install luajit-rocks", [cmake, "--build", ".", "--target", "install"], build_dir),
        ]
        if self.p["cuda"] and os.path.isdir(os.path.join(src, "cmake", "3.6")):
            # install.sh installs CMake 3.6's FindCUDA into the prefix before CUDA rocks.
            cuda_build = os.path.join(build_dir, "cmake-3.6")
            steps.append(
                (
                    "configure FindCUDA modules",
                    [cmake, os.path.join(src, "cmake", "3.6"), f"-DCMAKE_INSTALL_PREFIX={prefix}"],
                    cuda_build,
                )
            )
            steps.append(("install FindCUDA modules", [cmake, "--build", ".", "--target", "install"], cuda_build))
        for name in packages:
            _pkg_dir, rockspec = find_rockspec(self.runner, src, name)
            steps.append((f"luarocks make {name}", [luarocks, "make", rockspec], self.staged(name)))
        return steps

    def env(self, cmake, jobs, lua_env=None):
        prefix = self.p["prefix"]
        env = dict(os.environ)
        env.update(lua_env or {})
        toolbin = os.path.join(self.p["build_dir"], ".toolchain")
        path = [toolbin, os.path.join(prefix, "bin")]
        if self.p["cuda"]:
            path.append("/usr/local/cuda/bin")
        # Like install.sh: scrub an anaconda/conda install from PATH (its MKL breaks the build).
        system = [d for d in env.get("PATH", os.defpath).split(os.pathsep) if d and not CONDA.search(d)]
        env["PATH"] = os.pathsep.join(path + system)
        env["MAKEFLAGS"] = f"-j{jobs}"
        env["CMAKE_BUILD_PARALLEL_LEVEL"] = str(jobs)
        env["CMAKE_PREFIX_PATH"] = prefix
        env["CMAKE_LIBRARY_PATH"] = os.pathsep.join(
            [os.path.join(prefix, "include"), OPENBLAS_DIRS[0], os.path.join(prefix, "lib"), OPENBLAS_DIRS[1]]
            + ([env["CMAKE_LIBRARY_PATH"]] if env.get("CMAKE_LIBRARY_PATH") else [])
        )
        env["GIT_TERMINAL_PROMPT"] = "0"
        env.pop("MAKELEVEL", None)
        return env

    def write_log(self, text):
        self.log.write(text.encode("utf-8"))
        self.log.flush()

    def run_step(self, name, argv, cwd, env):
        self.write_log("\n==> [{}] {}\n    (cwd {})\n".format(name, " ".join(argv), cwd))
        start = time.monotonic()
        if not os.path.isdir(cwd):
            os.makedirs(cwd)
        rc = self.runner.run(argv, cwd, env, self.log_path)
        self.write_log(f"<== [{name}] rc={rc} in {time.monotonic() - start:.1f} s\n")
        self.steps.append({"name": name, "rc": rc, "seconds": round(time.monotonic() - start, 1)})
        if rc != 0:
            raise TorchError(name, f"step '{name}' failed with rc={rc}", rc=rc)

    def staged(self, name):
        return os.path.join(self.p["build_dir"], "pkgs", CATALOG_BY_NAME[name][1])

    def prepare(self, cmake, packages):
        """Fresh build tree; a prefix we built (or started to build) before is removed, since
        stale rocks of another flavour break. Each package is built from a copy under
        ``build_dir/pkgs`` (luarocks builds in the current directory), so the checkout stays
        clean for the next ``git`` update; leftovers of an upstream install.sh run (``build``
        directories, as clean.sh lists them) are not copied."""
        prefix, build_dir = self.p["prefix"], self.p["build_dir"]
        if os.path.isdir(build_dir):
            shutil.rmtree(build_dir)
        toolbin = os.path.join(build_dir, ".toolchain")
        os.makedirs(toolbin)
        os.symlink(cmake, os.path.join(toolbin, "cmake"))
        if os.path.exists(state_path(prefix)):
            remove_prefix(prefix)
        if not os.path.isdir(prefix):
            os.makedirs(prefix)
        write_state(prefix, {"managed_by": MANAGED_BY, "schema": STATE_SCHEMA, "incomplete": True})
        junk = shutil.ignore_patterns(".git", "build", "build.luarocks", "CMakeCache.txt", "CMakeFiles")
        for name in packages:
            shutil.copytree(os.path.join(self.p["src"], CATALOG_BY_NAME[name][1]), self.staged(name), True, junk)

    def luarocks_path(self, env):
        rc, out = self.runner.capture([os.path.join(self.p["prefix"], "bin", "luarocks"), "path"], env=env)
        self.write_log(f"\n==> [luarocks path]\n{out}")
        if rc != 0:
            raise TorchError("luarocks path", "luarocks path failed", rc=rc, output=out)
        return parse_luarocks_path(out)

    def execute(self, cmake, jobs, packages):
        """Run every step; returns the Lua environment ``luarocks path`` printed."""
        rotate_log(self.log_path)
        with open(self.log_path, "ab") as self.log:
            self.write_log(
                f"torch_install build of {self.p['src']} into {self.p['prefix']} "
                f"({self.p['lua_flavour']}, jobs={jobs}, cmake={cmake})\npackages: {' '.join(packages)}\n"
            )
            try:
                self.prepare(cmake, packages)
            except OSError as exc:
                raise TorchError("prepare", f"cannot prepare the build: {exc}") from exc
            steps = self.plan(cmake, jobs, packages)
            env = self.env(cmake, jobs)
            lua_env = None
            for number, (name, argv, cwd) in enumerate(steps, 1):
                self.report_progress(number, len(steps), name)
                if lua_env is None and name.startswith("luarocks make"):
                    # install.sh: eval "$($PREFIX/bin/luarocks path)" before the rocks.
                    lua_env = self.luarocks_path(env)
                    env = self.env(cmake, jobs, lua_env)
                self.run_step(name, argv, cwd, env)
            self.report_progress(len(steps), len(steps), "verify")
            return lua_env or {}

    def report_progress(self, number, total, name):
        write_progress(self.log_path, number, total, name)


def rotate_log(path):
    parent = os.path.dirname(path)
    if parent and not os.path.isdir(parent):
        os.makedirs(parent)
    if os.path.exists(path):
        os.replace(path, path + ".1")


def remove_prefix(prefix):
    real = os.path.realpath(prefix)
    if real in ("/", "/usr", "/usr/local", "/opt", os.path.expanduser("~")) or real.count("/") < 2:
        raise TorchError("prepare", f"refusing to clean prefix {prefix}")
    shutil.rmtree(prefix)


def parse_luarocks_path(text, home=None):
    """``export LUA_PATH='...'`` lines of ``luarocks path`` -> dict, without the entries of
    the building user's own tree (``~/.luarocks``): the result goes into a system-wide script."""
    home_tree = os.path.join(home or os.path.expanduser("~"), ".luarocks") + "/"
    env = {}
    for line in (text or "").splitlines():
        match = re.match(r"^\s*export\s+([A-Z_][A-Z0-9_]*)=(['\"]?)(.*)\2\s*$", line)
        if match and match.group(1) in ("LUA_PATH", "LUA_CPATH", "LUA_PATH_5_2", "LUA_CPATH_5_2"):
            parts = [part for part in match.group(3).split(";") if not part.startswith(home_tree)]
            env[match.group(1)] = ";".join(parts)
    return env


def log_tail(path, lines=probes.LOG_TAIL_LINES):
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            data = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


# --------------------------------------------------------------------------- activation


def activation_script(prefix, lua_env):
    """torch-activate (and the profile.d script the torch7 role writes from it): what upstream's
    torch-activate exports, without duplicating PATH entries, without a trailing ':' in LD_LIBRARY_PATH."""
    bindir = os.path.join(prefix, "bin")
    libdir = os.path.join(prefix, "lib")
    lines = [
        f"# Managed by {MANAGED_BY}: Torch7 in {prefix} (do not edit).",
        f"# The same environment as upstream's {bindir}/torch-activate.",
    ]
    for key in sorted(lua_env or {}):
        lines.append("export {}='{}'".format(key, lua_env[key].replace("'", "'\\''")))
    lines += [
        _prepend("PATH", bindir, ":"),
        _prepend("LD_LIBRARY_PATH", libdir, ":"),
        _prepend("DYLD_LIBRARY_PATH", libdir, ":"),
        _prepend("LUA_CPATH", libdir + "/?.so", ";", unset=";"),
    ]
    return "\n".join(lines) + "\n"


def _prepend(var, value, sep, unset=None):
    """sh: put ``value`` first in ``var`` once. Unset ``var``: no empty PATH element, or, with
    ``unset``, that text instead of the old value (Lua: 'x;;' keeps the default search path)."""
    rest = f"${{{var}:+{sep}${var}}}" if unset is None else f"{sep}${{{var}:-{unset}}}"
    return f'case "{sep}${{{var}}}{sep}" in *"{sep}{value}{sep}"*) ;; *) export {var}="{value}{rest}" ;; esac'


def write_activation(prefix, lua_env):
    """``<prefix>/bin/torch-activate``, as install.sh leaves it: part of the build (and of its artifact)."""
    path = os.path.join(prefix, "bin", "torch-activate")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(activation_script(prefix, lua_env))
    os.chmod(tmp, 0o755)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- build or not


def build_from_source(runner, p, check_mode, result, warnings):
    """Decide, and build when needed. Returns (the record of what is installed, whether it built)."""
    src, prefix = p["src"], p["prefix"]
    if not runner.exists(os.path.join(src, "exe", "luajit-rocks", "CMakeLists.txt")):
        raise TorchError(
            "locate sources",
            f"{src} is not a torch/distro checkout with submodules (no exe/luajit-rocks/CMakeLists.txt); "
            "clone it recursively",
        )
    commit = probes.source_commit(runner, src)
    packages = packages_for(p["extra_packages"], p["cuda"])
    for name in packages:
        find_rockspec(runner, src, name)  # every package's sources are checked out
    desired = records.desired_record(commit, p["lua_flavour"], prefix, packages, p["cuda"])
    result.update(commit=commit, packages=packages)

    state = records.read_state(state_path(prefix))
    reasons = ["force: true"] if p["force"] else records.compare_state(desired, state)
    if not reasons:
        reasons = probes.health_reasons(runner, prefix, state, p["require_blas"], p["verify_modules"], warnings)
    if not reasons:
        result["reason"] = "up to date: {} built at {}".format(commit[:12], state.get("built_at"))
        return state, False

    result["reason"] = "; ".join(reasons)
    cmake, version = probes.select_cmake(runner, p["cmake"])
    if p["cuda"] and not probes.find_nvcc(runner):
        raise TorchError("toolchain", "cuda: true but no nvcc on PATH, /usr/local/cuda/bin or /opt/cuda/bin")
    result["cmake"] = {"path": cmake, "version": probes.fmt(version)}
    # Before anything is removed or written: a build that fills the disk fails late and in a mess.
    shortfalls = probes.space_shortfalls(src, p["build_dir"], prefix, p["min_free_mb"])
    if shortfalls:
        raise TorchError("free space", "; ".join(shortfalls))
    if check_mode:
        return state or {}, True

    jobs = p["jobs"] or runner.cpu_count()
    build = Build(runner, p, p["log_path"])
    start = time.monotonic()
    try:
        lua_env = build.execute(cmake, jobs, packages)
    except TorchError as exc:
        result["steps"] = build.steps
        tail = exc.output or log_tail(p["log_path"])
        full = probes.disk_full_message(f"{exc.msg}\n{tail}", (prefix, p["build_dir"]), p["min_free_mb"])
        raise TorchError(
            exc.step,
            "Torch build failed at step '{}'{} (full log: {})".format(
                exc.step, f": {full}" if full else "", p["log_path"]
            ),
            rc=exc.rc,
            output=tail,
        ) from exc
    result["steps"] = build.steps
    blas, blas_soname = probes.verify(runner, prefix, lua_env, p["require_blas"], p["verify_modules"], warnings)
    seconds = round(time.monotonic() - start, 1)
    result["build_seconds"] = seconds

    record = dict(desired)
    record.update(
        schema=STATE_SCHEMA,
        managed_by=MANAGED_BY,
        source="build",
        built_on=platform.node(),
        blas_library=blas,
        blas_soname=blas_soname,
        build_seconds=seconds,
        built_at=records.now_utc(),
        cmake_version=probes.fmt(version),
        jobs=jobs,
        lua_env=lua_env,
        options={"require_blas": p["require_blas"], "extra_packages": list(p["extra_packages"])},
    )
    write_activation(prefix, lua_env)
    write_state(prefix, record)
    return record, True
