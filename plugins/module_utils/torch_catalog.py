# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What torch_install builds: torch/distro's packages, their order and dependencies, and where their rockspecs are.

Plain Python 3.8+ (it runs on the managed host).
"""

from __future__ import annotations

import os

from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils.torch_runner import TorchError

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


def resolve_packages(wanted, cuda):
    """Dependency closure of ``wanted`` (+ CUDA rocks when ``cuda``), in catalog order."""
    wanted = list(wanted)
    if cuda:
        wanted.extend(CUDA_PACKAGES)
    unknown = sorted(set(name for name in wanted if name not in CATALOG_BY_NAME))
    if unknown:
        raise TorchError("plan", "unknown Torch package(s): {}".format(", ".join(unknown)))
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
        raise TorchError("plan", "package(s) {} need CUDA; set cuda: true".format(", ".join(sorted(cuda_only))))
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
        raise TorchError(
            "locate sources",
            f"no rockspec for {name} under {pkg_dir} (is the checkout recursive, with submodules?)",
        )
    scm = [c for c in candidates if "-scm-" in c]
    return pkg_dir, (scm or candidates)[-1]


def packages_for(extra_packages, cuda):
    """What a torch_install of ``extra_packages`` builds: char-rnn's set, those, their dependencies."""
    return resolve_packages(list(CHAR_RNN_PACKAGES) + list(extra_packages), cuda)
