# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read-only probes of torch_install: the toolchain (CMake, nvcc), the checkout's commit, the health of a
prefix (th requires, libTH's BLAS) and free disk space. They run through the runner (torch_runner.py).

The rule that torch/distro needs CMake 3.x (``cmake_refusal``) lives here alone: the torch7 role asks it
through the ``torch_cmake_refusal`` filter before it installs a pinned CMake 3.
Plain Python 3.8+ (it runs on the managed host).
"""

from __future__ import annotations

import contextlib
import os
import re

from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils.blas import parse_ldd_blas
from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils.torch_records import state_path, th_path
from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils.torch_runner import TorchError

CMAKE_VERSION_PATTERN = re.compile(r"cmake\S* version (\d+)\.(\d+)(?:\.(\d+))?")
NVCC_CANDIDATES = ("/usr/local/cuda/bin/nvcc", "/opt/cuda/bin/nvcc")
NVCC_VERSION = re.compile(r"release (\d+\.\d+)")
REQUIRE_MARKER = "RNN_BOOTSTRAP_REQUIRE_OK"
LOG_TAIL_LINES = 40

# --------------------------------------------------------------------------- toolchain


def parse_cmake_version(text):
    match = CMAKE_VERSION_PATTERN.search(text or "")
    if not match:
        return None
    return tuple(int(part or 0) for part in match.groups())


CMAKE_3_HINT = (
    "pass cmake= a CMake 3.x, e.g. from a private virtualenv: "
    "python3 -m venv /opt/cmake3 && /opt/cmake3/bin/pip install 'cmake>=3.25,<4'"
)


def cmake_refusal(version):
    """Why torch/distro cannot be built with CMake ``version`` (a tuple, None when unknown), or None.

    torch/distro's CMakeLists declare compatibility with CMake 2.6/2.8 and torch7 sets policy
    CMP0026 to OLD; CMake 4 removed both. The one home of that rule (the torch7 role's filter
    torch_cmake_refusal asks it too)."""
    if version is None:
        return "its version cannot be read"
    if version[0] >= 4:
        return (
            f"CMake {fmt(version)}: CMake 4 removed compatibility with CMake < 3.5 and policy CMP0026 OLD, "
            "which torch/distro needs; it needs CMake 3.x"
        )
    return None


def select_cmake(runner, cmake):
    """Return (path, version tuple) of the CMake to build with, or raise TorchError."""
    given = bool(cmake)
    path = cmake if given else runner.which("cmake")
    if not path:
        raise TorchError("toolchain", "no cmake on PATH; install cmake (3.x) or pass cmake=/path/to/cmake")
    rc, out = runner.capture([path, "--version"])
    version = parse_cmake_version(out) if rc == 0 else None
    if version is None:
        raise TorchError("toolchain", f"cannot run {path} --version: {out.strip()[-300:]}", rc=rc)
    refusal = cmake_refusal(version)
    if refusal:
        what = f"cmake {path}" if given else f"system cmake {path}"
        raise TorchError("toolchain", f"{what} is {refusal}; {CMAKE_3_HINT}")
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


def nvcc_version(runner):
    """The CUDA release of the nvcc torch_install would use; TorchError when there is none."""
    nvcc = find_nvcc(runner)
    if not nvcc:
        raise TorchError("toolchain", "cuda: true but no nvcc on PATH, /usr/local/cuda/bin or /opt/cuda/bin")
    _rc, out = runner.capture([nvcc, "--version"])
    match = NVCC_VERSION.search(out)
    return match.group(1) if match else "unknown"


def source_commit(runner, src):
    rc, out = runner.capture(["git", "-c", "safe.directory=*", "-C", src, "rev-parse", "HEAD"])
    sha = out.strip().splitlines()[-1] if out.strip() else ""
    if rc != 0 or not re.match(r"^[0-9a-f]{40}$", sha):
        raise TorchError("read source commit", f"cannot read the commit of {src}: {out.strip()[-300:]}", rc=rc)
    return sha


# --------------------------------------------------------------------------- health


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
    BLAS libTH links against; raises TorchError when libTH is missing or ldd fails."""
    libth = find_libth(prefix)
    if not libth:
        raise TorchError("verify blas", f"no libTH.so under {prefix}/lib")
    rc, out = runner.capture(["ldd", libth])
    if rc != 0:
        raise TorchError("verify blas", f"ldd {libth} failed", rc=rc, output=out)
    name, resolved = parse_ldd_blas(out)
    if not name:
        return None, out
    if resolved is None:
        raise TorchError("verify blas", f"libTH needs {name} but it does not resolve", output=out)
    return os.path.realpath(resolved), out


def health_reasons(runner, prefix, state, require_blas, modules, warnings):
    """Why an install that matches its record is nevertheless broken (empty = healthy)."""
    th = th_path(prefix)
    if not runner.is_executable(th):
        return [f"install broken: {th} missing"]
    if not find_libth(prefix):
        return [f"install broken: no libTH.so in {prefix}/lib"]
    if require_blas and not state.get("blas_library"):
        return ["recorded build has no BLAS and require_blas is true"]
    ok, out, warning = check_requires(runner, prefix, modules, state.get("lua_env"))
    if warning:
        warnings.append(warning)
    if not ok:
        last = [line for line in out.strip().splitlines() if line.strip()][-1:] or ["no output"]
        return ["install broken: th cannot require {} ({})".format(", ".join(modules), last[0][:200])]
    return []


def verify(runner, prefix, lua_env, require_blas, modules, warnings):
    """After a build or an extract: libTH links a BLAS (unless not required) and th requires ``modules``.

    Returns (resolved BLAS library, the soname libTH asks for); raises TorchError."""
    blas, ldd_out = detect_blas(runner, prefix)
    if blas is None and require_blas:
        raise TorchError(
            "verify blas",
            "libTH is not linked against any BLAS library (install libopenblas-dev and rebuild, "
            "or set require_blas: false)",
            output=ldd_out,
        )
    ok, out, warning = check_requires(runner, prefix, modules, lua_env)
    if warning:
        warnings.append(warning)
    if not ok:
        raise TorchError(
            "verify requires",
            "th cannot require {}".format(", ".join(modules)),
            output="\n".join(out.splitlines()[-LOG_TAIL_LINES:]),
        )
    return blas, parse_ldd_blas(ldd_out)[0]


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
