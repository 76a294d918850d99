# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Build logic for the ``torch_install`` module: Torch7 from a torch/distro checkout.

Replicates what torch/distro's ``install.sh`` does, as a list of explicit steps, without
its prompt, its shell-rc editing, its CUDA auto-detection and its Qt packages:

1. cmake configure + build + install of ``exe/luajit-rocks`` with ``-DWITH_<FLAVOUR>=ON``;
2. ``<prefix>/bin/luarocks make <rockspec>`` in each needed package directory, in
   dependency order (the order install.sh uses);
3. verification: libTH links a BLAS, ``th`` can require the needed modules.

Everything here is plain Python 3.8+ (it runs on the managed host) and is driven through a
small runner object, so the unit tests can replace every command with a fake.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import time

from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils.blas import parse_ldd_blas
from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils.host import usable_cpus, write_json

STATE_FILE = ".rnn_bootstrap-build.json"
STATE_SCHEMA = 1
MANAGED_BY = "rnn_bootstrap.char_rnn.torch_install"
REQUIRE_MARKER = "RNN_BOOTSTRAP_REQUIRE_OK"

LUA_FLAVOURS = ("LUAJIT21", "LUAJIT20", "LUA51", "LUA52")

# name, directory in torch/distro, rockspec (relative to the directory), dependencies, cuda.
# Order = the order torch/distro's install.sh (commit 0219027) runs `luarocks make`, so any
# subset taken in this order is a valid dependency order. Dependencies are those the
# rockspecs declare, plus runtime requires they forget (optim -> xlua). exe/qtlua and pkg/qttorch (Qt4) are
# deliberately absent.
CATALOG = (
    ("luafilesystem", "extra/luafilesystem", "rockspecs/luafilesystem-1.6.3-1.rockspec", (), False),
    ("penlight", "extra/penlight", "penlight-scm-1.rockspec", ("luafilesystem",), False),
    ("lua-cjson", "extra/lua-cjson", "lua-cjson-2.1devel-1.rockspec", (), False),
    ("luaffi", "extra/luaffifb", "luaffi-scm-1.rockspec", (), False),
    ("sundown", "pkg/sundown", "rocks/sundown-scm-1.rockspec", (), False),
    ("cwrap", "pkg/cwrap", "rocks/cwrap-scm-1.rockspec", (), False),
    ("paths", "pkg/paths", "rocks/paths-scm-1.rockspec", (), False),
    ("torch", "pkg/torch", "rocks/torch-scm-1.rockspec", ("paths", "cwrap"), False),
    ("dok", "pkg/dok", "rocks/dok-scm-1.rockspec", ("sundown",), False),
    ("trepl", "exe/trepl", "trepl-scm-1.rockspec", ("torch", "penlight"), False),
    ("sys", "pkg/sys", "sys-1.1-0.rockspec", ("torch", "luaffi"), False),
    ("xlua", "pkg/xlua", "xlua-1.0-0.rockspec", ("torch", "sys"), False),
    ("moses", "extra/moses", "rockspec/moses-1.6.1-1.rockspec", (), False),
    ("nn", "extra/nn", "rocks/nn-scm-1.rockspec", ("torch", "luaffi", "moses"), False),
    ("graph", "extra/graph", "rocks/graph-scm-1.rockspec", ("torch",), False),
    ("nngraph", "extra/nngraph", "nngraph-scm-1.rockspec", ("torch", "graph", "nn"), False),
    ("image", "pkg/image", "image-1.1.alpha-0.rockspec", ("torch", "sys", "xlua", "dok"), False),
    # optim's rockspec declares only torch, but optim/Logger.lua (loaded by optim/init.lua)
    # does `require 'xlua'`; a build without xlua cannot `require 'optim'`.
    ("optim", "pkg/optim", "optim-1.0.5-0.rockspec", ("torch", "xlua"), False),
    ("cutorch", "extra/cutorch", "rocks/cutorch-scm-1.rockspec", ("torch",), True),
    ("cunn", "extra/cunn", "rocks/cunn-scm-1.rockspec", ("torch", "nn", "cutorch"), True),
    ("gnuplot", "pkg/gnuplot", "rocks/gnuplot-scm-1.rockspec", ("torch", "paths"), False),
    ("env", "exe/env", "env-scm-1.rockspec", ("torch", "dok"), False),
    ("nnx", "extra/nnx", "nnx-0.1-1.rockspec", ("torch", "xlua"), False),
    ("threads", "extra/threads", "rocks/threads-scm-1.rockspec", ("torch",), False),
    ("argcheck", "extra/argcheck", "rocks/argcheck-scm-1.rockspec", ("sundown",), False),
    ("cudnn", "extra/cudnn", "cudnn-scm-1.rockspec", ("torch", "cutorch", "nn"), True),
)
CATALOG_BY_NAME = {entry[0]: entry for entry in CATALOG}

# What char-rnn needs: train.lua/sample.lua require torch, nn, nngraph, optim and lfs;
# trepl provides the `th` interpreter they run under.
CHAR_RNN_PACKAGES = ("torch", "nn", "nngraph", "optim", "luafilesystem", "trepl")
CUDA_PACKAGES = ("cutorch", "cunn")
DEFAULT_VERIFY_MODULES = ("torch", "nn", "nngraph", "optim", "lfs")

CMAKE_VERSION_PATTERN = re.compile(r"cmake\S* version (\d+)\.(\d+)(?:\.(\d+))?")
NVCC_CANDIDATES = ("/usr/local/cuda/bin/nvcc", "/opt/cuda/bin/nvcc")
# Where install.sh lets CMake look for an OpenBLAS built from source (/opt/OpenBLAS).
OPENBLAS_DIRS = ("/opt/OpenBLAS/include", "/opt/OpenBLAS/lib")
LOG_TAIL_LINES = 40
CONDA = re.compile(r"conda[2-9]?")


class BuildError(Exception):
    """A step failed; carries what the module reports."""

    def __init__(self, step, msg, rc=None, output=""):
        super().__init__(msg)
        self.step = step
        self.msg = msg
        self.rc = rc
        self.output = output


# --------------------------------------------------------------------------- runner


class Runner:
    """Runs commands. Replaced by a fake in unit tests.

    ``run`` streams a build step's output into the open log file, stdin is /dev/null so no
    prompt can ever wait for an answer. ``capture`` runs a short probe and returns its output.
    """

    def run(self, argv, cwd, env, log):
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        return proc.wait()

    def capture(self, argv, cwd=None, env=None, timeout=600):
        try:
            proc = subprocess.run(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
        except OSError as exc:
            return 127, str(exc)
        except subprocess.TimeoutExpired:
            return 124, f"timed out after {timeout} s"
        return proc.returncode, proc.stdout.decode("utf-8", "replace")

    def which(self, name, path=None):
        return shutil.which(name, path=path)

    def exists(self, path):
        return os.path.exists(path)

    def is_executable(self, path):
        return os.path.isfile(path) and os.access(path, os.X_OK)

    def cpu_count(self):
        return usable_cpus()


# --------------------------------------------------------------------------- planning


def resolve_packages(wanted, cuda):
    """Dependency closure of ``wanted`` (+ CUDA rocks when ``cuda``), in catalog order."""
    wanted = list(wanted)
    if cuda:
        wanted.extend(CUDA_PACKAGES)
    unknown = sorted(set(name for name in wanted if name not in CATALOG_BY_NAME))
    if unknown:
        raise ValueError("unknown Torch package(s): {}".format(", ".join(unknown)))
    needed = set()
    stack = list(wanted)
    while stack:
        name = stack.pop()
        if name in needed:
            continue
        needed.add(name)
        stack.extend(CATALOG_BY_NAME[name][3])
    cuda_only = [n for n in needed if CATALOG_BY_NAME[n][4]]
    if cuda_only and not cuda:
        raise ValueError("package(s) {} need CUDA; set cuda: true".format(", ".join(sorted(cuda_only))))
    return [entry[0] for entry in CATALOG if entry[0] in needed]


def find_rockspec(runner, src, name):
    """Path of the rockspec install.sh uses for ``name``; falls back to a glob when a future
    commit renamed it (prefers ``<rock>-scm-*``)."""
    _name, subdir, rockspec, _deps, _cuda = CATALOG_BY_NAME[name]
    pkg_dir = os.path.join(src, subdir)
    exact = os.path.join(pkg_dir, rockspec)
    if runner.exists(exact):
        return pkg_dir, rockspec
    rock = os.path.basename(rockspec).split("-")[0]
    candidates = []
    for folder in ("", "rocks", "rockspec", "rockspecs"):
        base = os.path.join(pkg_dir, folder)
        if not os.path.isdir(base):
            continue
        for fname in sorted(os.listdir(base)):
            if fname.endswith(".rockspec") and fname.startswith(rock + "-"):
                candidates.append(os.path.join(folder, fname) if folder else fname)
    if not candidates:
        raise BuildError(
            "locate sources",
            f"no rockspec for {name} under {pkg_dir} (is the checkout recursive, with submodules?)",
        )
    scm = [c for c in candidates if "-scm-" in c]
    return pkg_dir, (scm or candidates)[-1]


def parse_cmake_version(text):
    match = CMAKE_VERSION_PATTERN.search(text or "")
    if not match:
        return None
    return tuple(int(part or 0) for part in match.groups())


def select_cmake(runner, cmake):
    """Return (path, version tuple) of the CMake to build with, or raise BuildError.

    torch/distro's CMakeLists declare compatibility with CMake 2.6/2.8 and torch7 sets
    policy CMP0026 to OLD; CMake 4 refuses both. A pinned 3.x must be given then.
    """
    given = bool(cmake)
    path = cmake if given else runner.which("cmake")
    if not path:
        raise BuildError("toolchain", "no cmake on PATH; install cmake (3.x) or pass cmake=/path/to/cmake")
    rc, out = runner.capture([path, "--version"])
    version = parse_cmake_version(out) if rc == 0 else None
    if version is None:
        raise BuildError("toolchain", f"cannot run {path} --version: {out.strip()[-300:]}", rc=rc)
    if version[0] >= 4:
        hint = (
            "pass cmake= a CMake 3.x, e.g. from a private virtualenv: "
            "python3 -m venv /opt/cmake3 && /opt/cmake3/bin/pip install 'cmake>=3.25,<4'"
        )
        if given:
            raise BuildError("toolchain", f"cmake {path} is {fmt(version)}; torch/distro needs CMake 3.x; {hint}")
        raise BuildError(
            "toolchain",
            f"system cmake {path} is {fmt(version)}: CMake 4 removed compatibility with CMake < 3.5 and policy "
            f"CMP0026 OLD, which torch/distro needs; {hint}",
        )
    return os.path.abspath(path) if given else path, version


def fmt(version):
    return ".".join(str(v) for v in version) if version else None


def find_nvcc(runner):
    found = runner.which("nvcc")
    if found:
        return found
    for candidate in NVCC_CANDIDATES:
        if runner.is_executable(candidate):
            return candidate
    return None


def source_commit(runner, src):
    rc, out = runner.capture(["git", "-c", "safe.directory=*", "-C", src, "rev-parse", "HEAD"])
    sha = out.strip().splitlines()[-1] if out.strip() else ""
    if rc != 0 or not re.match(r"^[0-9a-f]{40}$", sha):
        raise BuildError("read source commit", f"cannot read the commit of {src}: {out.strip()[-300:]}", rc=rc)
    return sha


def state_path(prefix):
    return os.path.join(prefix, STATE_FILE)


def read_state(path):
    """The recorded build, ``None`` when absent, ``{}`` when unreadable."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def desired_record(commit, flavour, prefix, packages, cuda):
    """The part of the state that decides whether a rebuild is needed."""
    return {
        "commit": commit,
        "lua_flavour": flavour,
        "prefix": prefix,
        "packages": list(packages),
        "cuda": bool(cuda),
    }


def compare_state(desired, state):
    """Reasons why ``state`` (a recorded build) does not match ``desired``; empty = match."""
    if state is None:
        return ["no build record"]
    if not state:
        return ["build record unreadable"]
    if state.get("incomplete"):
        return ["previous build did not finish"]
    reasons = []
    for key in ("commit", "lua_flavour", "prefix", "packages", "cuda"):
        if state.get(key) != desired[key]:
            reasons.append(f"{key} changed: {state.get(key)} -> {desired[key]}")
    return reasons


# --------------------------------------------------------------------------- probes


def th_path(prefix):
    return os.path.join(prefix, "bin", "th")


def activation_env(prefix, lua_env, base=None):
    """Environment as ``torch-activate`` (and our profile script) sets it."""
    env = dict(os.environ if base is None else base)
    env.update(lua_env or {})
    env["PATH"] = os.path.join(prefix, "bin") + os.pathsep + env.get("PATH", os.defpath)
    lib = os.path.join(prefix, "lib")
    env["LD_LIBRARY_PATH"] = lib + (os.pathsep + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    return env


def check_requires(runner, prefix, modules, lua_env):
    """Run ``th -e`` requiring ``modules``; returns (ok, output, exit_warning).

    trepl's ``th -e`` prints an error and still exits 0, so success is a marker printed after
    the requires. When the marker is printed but ``th`` then dies (seen with LUA51: luaffi's
    cdata_gc segfaults in lua_close at exit), the requires did work: ok, with a warning."""
    th = th_path(prefix)
    if not runner.is_executable(th):
        return False, f"{th} is missing", None
    code = "; ".join(f"require '{m}'" for m in modules) + f"; print('{REQUIRE_MARKER}')"
    rc, out = runner.capture([th, "-e", code], cwd=prefix, env=activation_env(prefix, lua_env), timeout=300)
    if REQUIRE_MARKER not in out:
        return False, out, None
    if rc != 0:
        how = f"signal {-rc}" if rc < 0 else f"rc={rc}"
        return (
            True,
            out,
            (
                f"th required {', '.join(modules)} but then exited with {how} (a crash at exit; with LUA51 "
                "this is luaffi's cdata_gc during lua_close): scripts that end normally report this exit status"
            ),
        )
    return True, out, None


def find_libth(prefix):
    libdir = os.path.join(prefix, "lib")
    try:
        names = sorted(os.listdir(libdir))
    except OSError:
        return None
    for name in names:
        if name == "libTH.so" or name.startswith("libTH.so.") or name == "libTH.dylib":
            return os.path.join(libdir, name)
    return None


def detect_blas(runner, prefix):
    """Resolved path (symlinks followed, so pthread/OpenMP OpenBLAS variants show) of the
    BLAS libTH links against; raises BuildError when libTH is missing or ldd fails."""
    libth = find_libth(prefix)
    if not libth:
        raise BuildError("verify blas", f"no libTH.so under {prefix}/lib")
    rc, out = runner.capture(["ldd", libth])
    if rc != 0:
        raise BuildError("verify blas", f"ldd {libth} failed", rc=rc, output=out)
    name, resolved = parse_ldd_blas(out)
    if not name:
        return None, out
    if resolved is None:
        raise BuildError("verify blas", f"libTH needs {name} but it does not resolve", output=out)
    return os.path.realpath(resolved), out


# --------------------------------------------------------------------------- build


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
        rc = self.runner.run(argv, cwd, env, self.log)
        self.write_log(f"<== [{name}] rc={rc} in {time.monotonic() - start:.1f} s\n")
        self.steps.append({"name": name, "rc": rc, "seconds": round(time.monotonic() - start, 1)})
        if rc != 0:
            raise BuildError(name, f"step '{name}' failed with rc={rc}", rc=rc)

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
            raise BuildError("luarocks path", "luarocks path failed", rc=rc, output=out)
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
                raise BuildError("prepare", f"cannot prepare the build: {exc}") from exc
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
        raise BuildError("prepare", f"refusing to clean prefix {prefix}")
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


def log_tail(path, lines=LOG_TAIL_LINES):
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            data = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def write_state(prefix, record):
    return write_json(state_path(prefix), record)


def progress_path(log_path):
    return log_path + ".progress.json"


def write_progress(log_path, number, total, name, finished=False):
    """Where the build is, for a play that follows a build running in the background."""
    write_json(
        progress_path(log_path),
        {"step": number, "steps": total, "name": name, "finished": finished, "since": round(time.time())},
    )


# --------------------------------------------------------------------------- disk space

DISK_FULL = re.compile(r"No space left on device|Disk quota exceeded|ENOSPC|\[Errno 28\]")
MB = 1 << 20


def existing_ancestor(path):
    """PATH, or its nearest parent that exists (a prefix not created yet lives on its parent's filesystem)."""
    path = os.path.abspath(path)
    while not os.path.exists(path) and path != os.path.dirname(path):
        path = os.path.dirname(path)
    return path


def mount_point(path):
    path = os.path.realpath(existing_ancestor(path))
    dev = os.stat(path).st_dev
    while path != "/" and os.stat(os.path.dirname(path)).st_dev == dev:
        path = os.path.dirname(path)
    return path


def free_mb(path):
    st = os.statvfs(existing_ancestor(path))
    return st.f_bavail * st.f_frsize // MB


def tree_mb(path, skip=()):
    """Disk use (allocated blocks) of PATH's tree, without the subtrees in SKIP."""
    skip = {os.path.abspath(s) for s in skip}
    total = 0
    for root, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs if os.path.join(root, d) not in skip]
        for name in files + dirs:
            with contextlib.suppress(OSError):  # removed while we walk
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total // MB


def space_shortfalls(src, build_dir, prefix, min_free_mb):
    """Filesystems where a build of SRC into PREFIX would not fit: each that holds the sources,
    the build tree or the prefix needs MIN_FREE_MB for all of them (a conservative reading when they
    are split over filesystems). What is already there counts: the checkout, and the build tree
    and a prefix of ours, which the build removes first. Returns a list of messages."""
    if not min_free_mb:
        return []
    ours = os.path.exists(state_path(prefix))
    parts = {
        "sources": (src, tree_mb(src, (build_dir, prefix)) if os.path.isdir(src) else 0),
        "build tree": (build_dir, tree_mb(build_dir) if os.path.isdir(build_dir) else 0),
        "prefix": (prefix, tree_mb(prefix) if ours and os.path.isdir(prefix) else 0),
    }
    by_mount = {}
    for name, (path, used) in parts.items():
        entry = by_mount.setdefault(mount_point(path), {"paths": [], "used": 0, "free": free_mb(path)})
        entry["paths"].append(f"{name} {path}")
        entry["used"] += used
    problems = []
    for mount, entry in sorted(by_mount.items()):
        if entry["free"] + entry["used"] < min_free_mb:
            problems.append(
                "not enough disk space to build Torch7 on {} ({}): {} MB free{}, a build needs about {} MB there "
                "(torch7_min_free_mb: sources, build tree and prefix); free {} MB or move torch7_src / "
                "torch7_prefix".format(
                    mount,
                    ", ".join(entry["paths"]),
                    entry["free"],
                    f" + {entry['used']} MB already used by this build" if entry["used"] else "",
                    min_free_mb,
                    min_free_mb - entry["free"] - entry["used"],
                )
            )
    return problems


def disk_full_message(text, paths, min_free_mb):
    """The build's failure in words when TEXT (its error and log tail) says the disk filled up."""
    if not DISK_FULL.search(text or ""):
        return None
    where = []
    for path in paths:
        try:
            where.append((free_mb(path), mount_point(path), path))
        except OSError:
            continue
    if not where:
        return "no space left on device"
    free, mount, path = min(where)
    need = f"; a build needs about {min_free_mb} MB there (torch7_min_free_mb)" if min_free_mb else ""
    return f"no space left on device: {mount} (for {path}) has {free} MB free now{need}"


# --------------------------------------------------------------------------- activation


def profile_script_content(prefix, lua_env):
    """/etc/profile.d script: what upstream's torch-activate exports, without duplicating
    PATH entries and without a trailing ':' in LD_LIBRARY_PATH."""
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


def ensure_file(path, content, mode, check_mode):
    """Write ``content`` to ``path`` unless identical; returns changed."""
    try:
        with open(path, encoding="utf-8") as handle:
            current = handle.read()
    except OSError:
        current = None
    mode_ok = current is not None and (os.stat(path).st_mode & 0o7777) == mode
    if current == content and mode_ok:
        return False
    if not check_mode:
        parent = os.path.dirname(path)
        if parent and not os.path.isdir(parent):
            os.makedirs(parent)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(content)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    return True


def ensure_symlink(link, target, check_mode):
    if os.path.islink(link) and os.readlink(link) == target:
        return False
    if os.path.exists(link) and not os.path.islink(link):
        raise BuildError("activate", f"{link} exists and is not a symlink; not replacing it")
    if not check_mode:
        parent = os.path.dirname(link)
        if parent and not os.path.isdir(parent):
            os.makedirs(parent)
        tmp = link + ".tmp"
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(target, tmp)
        os.replace(tmp, link)
    return True


# --------------------------------------------------------------------------- artifact


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
        raise BuildError("read artifact", f"cannot read artifact {path}: {exc}") from exc
    raise BuildError("read artifact", f"artifact {path} has no {STATE_FILE} at its top")


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
                raise BuildError("extract artifact", f"unsafe member {member.name} in {path}")
            if member.issym() and os.path.isabs(member.linkname) and not member.linkname.startswith(prefix):
                raise BuildError("extract artifact", f"unsafe symlink {member.name} in {path}")
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
        raise BuildError("extract artifact", f"cannot extract {path}: {exc}") from exc
    except BuildError:
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
