"""Make `ansible_collections.rnn_bootstrap.char_rnn` importable for plain pytest.

The checkout is linked at .cache/collections/ansible_collections/rnn_bootstrap/char_rnn
(the same link ansible.cfg points Ansible at), and that collections root goes on sys.path.
"""

from __future__ import annotations

import sys
from pathlib import Path

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
