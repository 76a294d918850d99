# Copyright: rnn_bootstrap maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which BLAS a Torch7 library links, read from ``ldd`` output: the one home of that rule.

Used by torch_install (health checks after a build or an artifact install) and by the training
launcher (which thread settings suit the OpenBLAS that ``th`` loads). Plain Python 3.8+ with no
Ansible imports: the role copies it beside the launcher on the managed host.
"""

from __future__ import annotations

import os
import re

BLAS_PATTERN = re.compile(r"(openblas|mkl|atlas|goto|blis|blas)", re.IGNORECASE)
# Debian and Fedora install each OpenBLAS threading build in a directory (or file) named after it.
OPENBLAS_VARIANTS = ("openmp", "pthread", "serial")


def parse_ldd_blas(ldd_output: str | None) -> tuple[str | None, str | None]:
    """First BLAS-looking library in ``ldd`` output: (soname, resolved path or None)."""
    for line in (ldd_output or "").splitlines():
        line = line.strip()
        if not line:
            continue
        name = line.split()[0]
        if not BLAS_PATTERN.search(name):
            continue
        resolved = None
        if "=>" in line:
            target = line.split("=>", 1)[1].strip().split(" (")[0].strip()
            if target and target != "not found":
                resolved = target
        return name, resolved
    return None, None


def openblas_variant(resolved: str) -> str:
    """openmp, pthread, serial or unknown: the threading build of an OpenBLAS at ``resolved``
    (symlinks followed, so Debian's alternatives show which build is behind libopenblas.so.0)."""
    if not resolved or "openblas" not in os.path.basename(resolved).lower():
        return "unknown"
    real = os.path.realpath(resolved)
    for kind in OPENBLAS_VARIANTS:
        if kind in os.path.basename(os.path.dirname(real)) or kind in os.path.basename(real):
            return kind
    return "unknown"
