# Copyright: rnn_bootstrap maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Small facts and writes about the managed host that modules and the launcher share.

Plain Python 3.8+ with no Ansible imports: the char_rnn_train role copies it beside the launcher.
"""

from __future__ import annotations

import json
import os
from typing import Any


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask: a cgroup/cpuset limit shows), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except OSError:
            pass
    return max(1, os.cpu_count() or 1)


def write_json(path: str, data: Any) -> str:
    """Atomically: a reader sees the old file or the new one, never half of one."""
    parent = os.path.dirname(path)
    if parent and not os.path.isdir(parent):
        os.makedirs(parent)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.replace(tmp, path)
    return path
