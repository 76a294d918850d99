"""Make `ansible_collections.rnn_bootstrap.char_rnn` importable for plain pytest; fixtures both
tests/unit and tests/integration use.

The checkout is linked at .cache/collections/ansible_collections/rnn_bootstrap/char_rnn
(the same link ansible.cfg points Ansible at), and that collections root goes on sys.path.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
COLLECTIONS_ROOT = REPO / ".cache" / "collections"


def _link_collection() -> None:
    link = COLLECTIONS_ROOT / "ansible_collections" / "rnn_bootstrap" / "char_rnn"
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(REPO, target_is_directory=True)
    if str(COLLECTIONS_ROOT) not in sys.path:
        sys.path.insert(0, str(COLLECTIONS_ROOT))
    # ansible_collections is a namespace package; drop a cached one that predates our path.
    for name in [m for m in sys.modules if m == "ansible_collections" or m.startswith("ansible_collections.")]:
        del sys.modules[name]


_link_collection()


@pytest.fixture
def artifact_key() -> Callable[..., dict[str, Any]]:
    """``artifact_key(**fields)``: the Torch7 artifact key of one host (Debian 12, x86_64, torch/distro
    0219027, LuaJIT 2.1, package torch, no CUDA, OpenBLAS with OpenMP), with ``fields`` replaced."""
    from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils import torch_artifact as ta

    def make(**fields: Any) -> dict[str, Any]:
        key = ta.make_key(
            "debian",
            "12",
            "2.36",
            "x86_64",
            "0219027e6c4644a0ba5c5bf137c989a0a8c9e01b",
            "/opt/torch/install",
            "LUAJIT21",
            ["torch"],
            False,
            None,
            "libopenblas.so.0:openmp",
        )
        key.update(fields)
        return key

    return make
