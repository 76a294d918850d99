# Copyright: rnn_bootstrap maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action ``loss_plot``: char-rnn loss curves into a PNG on the controller (docs: plugins/modules/loss_plot.py).

Everything happens on the controller, so there is no module to send to the host. matplotlib is
optional: without it the task returns plotted=false and says how to install it, so a status play
still prints its table.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import sys
import tempfile
import zlib
from typing import Any

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

# The version tested (requirements-test.txt); the install hint names it.
MATPLOTLIB_PIN = "matplotlib==3.11.2"
# tEXt keyword under which the PNG records the digest of what it was drawn from.
META_KEY = "rnn_bootstrap.char_rnn.loss_plot"
# Part of the digest: bump it when the drawing changes, so images drawn the old way are redrawn.
STYLE_VERSION = 1
DPI = 100
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# matplotlib's default colour cycle (tab10), written out so the colours do not depend on a style.
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip
TRAIN_TINT = 0.5  # the training curve: the run's colour mixed halfway with white, under the validation curve
MIN_PIXELS = 100
MAX_PIXELS = 10000

ARGUMENT_SPEC: dict[str, Any] = {
    "runs": {
        "type": "list",
        "elements": "dict",
        "required": True,
        "options": {
            "name": {"type": "str", "required": True},
            "history": {"type": "dict", "required": True},
        },
    },
    "dest": {"type": "path", "required": True},
    "title": {"type": "str", "default": "char-rnn loss"},
    "width": {"type": "int", "default": 800},
    "height": {"type": "int", "default": 500},
}


def tint(color: str, amount: float) -> str:
    """``color`` (#rrggbb) mixed with white by ``amount`` (0: unchanged, 1: white)."""
    channels = [int(color[i : i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(c + (255 - c) * amount):02x}" for c in channels)


def colors_of(index: int) -> tuple[str, str]:
    """(train, val) colours of the run at ``index``."""
    base = PALETTE[index % len(PALETTE)]
    return tint(base, TRAIN_TINT), base


def _series(value: Any, where: str) -> list[list[float]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise AnsibleActionFail(f"{where} must be a list of [iteration, loss], got {type(value).__name__}")
    points = []
    for n, point in enumerate(value):
        try:
            iteration, loss = (float(x) for x in point)
        except (TypeError, ValueError):
            raise AnsibleActionFail(f"{where}[{n}] must be [iteration, loss] (two numbers), got {point!r}") from None
        if math.isfinite(iteration) and math.isfinite(loss):  # a NaN loss cannot be drawn
            points.append([iteration, loss])
    return points


def normalize_runs(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runs as plain names and float series; a whole train_progress result is taken for its history."""
    out = []
    for n, run in enumerate(runs):
        history = run["history"]
        if "history" in history and "train" not in history and "val" not in history:
            history = history["history"] or {}
            if not isinstance(history, dict):
                raise AnsibleActionFail(f"runs[{n}].history.history must be a dict (train_progress with history=true)")
        unknown = sorted(set(history) - {"train", "val", "train_points", "val_points", "segments"})
        if unknown:
            raise AnsibleActionFail(
                f"runs[{n}].history has {', '.join(map(str, unknown))}: expected train and val, lists of "
                "[iteration, loss] (what train_progress returns as history with history=true)"
            )
        out.append(
            {
                "name": run["name"],
                "train": _series(history.get("train"), f"runs[{n}].history.train"),
                "val": _series(history.get("val"), f"runs[{n}].history.val"),
            }
        )
    return out


def digest(runs: list[dict[str, Any]], title: str, width: int, height: int) -> str:
    data = {"style": STYLE_VERSION, "runs": runs, "title": title, "width": width, "height": height}
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def count_curves(runs: list[dict[str, Any]]) -> int:
    return sum(bool(run["train"]) + bool(run["val"]) for run in runs)


def png_text(path: str) -> dict[str, str] | None:
    """The tEXt entries of the whole PNG at ``path``; None when missing, not a PNG, or damaged (bad CRC, no IEND)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    if not data.startswith(PNG_SIGNATURE):
        return None
    texts: dict[str, str] = {}
    pos = len(PNG_SIGNATURE)
    while pos + 12 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        crc = data[pos + 8 + length : pos + 12 + length]
        if len(body) != length or len(crc) != 4 or struct.unpack(">I", crc)[0] != zlib.crc32(kind + body):
            return None
        if kind == b"tEXt" and b"\0" in body:
            key, value = body.split(b"\0", 1)
            texts[key.decode("latin-1")] = value.decode("latin-1")
        if kind == b"IEND":
            return texts
        pos += 12 + length
    return None


def render(runs: list[dict[str, Any]], title: str, width: int, height: int, path: str, checksum: str) -> int:
    """Draw the runs into the PNG ``path``; return the number of curves drawn. Needs matplotlib."""
    # Figure with the Agg canvas, no pyplot: no global backend or figure state in the controller.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for index, run in enumerate(runs):
        train_color, val_color = colors_of(index)
        if run["train"]:
            xs, ys = zip(*run["train"], strict=True)
            axes.plot(xs, ys, color=train_color, linewidth=1.5, label=f"{run['name']} train")
        if run["val"]:
            xs, ys = zip(*run["val"], strict=True)
            axes.plot(xs, ys, color=val_color, linewidth=2, linestyle="--", marker="o", markersize=4,
                      label=f"{run['name']} val")  # fmt: skip
    curves = len(axes.get_lines())
    if curves:
        axes.legend(fontsize="small", ncols=1 + (curves - 1) // 16)
    else:
        axes.text(0.5, 0.5, "no loss figures yet", transform=axes.transAxes, ha="center", va="center")
    axes.set_xlabel("iteration")
    axes.set_ylabel("loss")
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    # Software (matplotlib's version) left out: the same runs give the same bytes.
    figure.savefig(path, format="png", dpi=DPI, metadata={"Software": None, META_KEY: checksum})
    return curves


def write_atomically(runs: list[dict[str, Any]], title: str, width: int, height: int, dest: str, checksum: str) -> int:
    parent = os.path.dirname(os.path.abspath(dest))
    os.makedirs(parent, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".loss_plot-", suffix=".png", dir=parent)
    os.close(fd)
    try:
        curves = render(runs, title, width, height, tmp, checksum)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as an ordinary new file, not mkstemp's 0600
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return curves


def matplotlib_missing() -> str | None:
    """None when matplotlib imports; else why not and how to install it."""
    try:
        import matplotlib  # noqa: F401  (imported to see whether it is there)
        from matplotlib.backends import backend_agg  # noqa: F401
    except ImportError as exc:
        return (
            f"matplotlib is not installed for the controller's Python ({sys.executable}): no plot drawn ({exc}). "
            f"Install it there, e.g. {sys.executable} -m pip install '{MATPLOTLIB_PIN}' "
            "(an optional extra of rnn_bootstrap.char_rnn: meta/ee-requirements.txt, requirements-test.txt)"
        )
    return None


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _supports_check_mode = True
    _requires_connection = False  # draws on the controller only

    def run(self, tmp: str | None = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        del tmp  # unused
        args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)[1]
        width, height, title = args["width"], args["height"], args["title"]
        for name, value in (("width", width), ("height", height)):
            if not MIN_PIXELS <= value <= MAX_PIXELS:
                raise AnsibleActionFail(f"{name} must be between {MIN_PIXELS} and {MAX_PIXELS} pixels, not {value}")
        dest = args["dest"]
        if os.path.isdir(dest):
            raise AnsibleActionFail(f"dest {dest} is a directory: give the PNG's file name")
        runs = normalize_runs(args["runs"])
        checksum = digest(runs, title, width, height)
        result.update(
            changed=False,
            plotted=False,
            dest=dest,
            curves=count_curves(runs),
            colors=[
                {"name": run["name"], "train": colors_of(n)[0], "val": colors_of(n)[1]} for n, run in enumerate(runs)
            ],
            width=width,
            height=height,
            checksum=checksum,
        )
        if (png_text(dest) or {}).get(META_KEY) == checksum:
            result.update(plotted=True, msg=f"{dest} is up to date")
            return result
        missing = matplotlib_missing()
        if missing:
            result["msg"] = missing
            return result
        if self._task.check_mode:
            result.update(changed=True, msg=f"{dest} would be drawn")
            return result
        try:
            result["curves"] = write_atomically(runs, title, width, height, dest, checksum)
        except OSError as exc:
            raise AnsibleActionFail(f"cannot write {dest}: {exc}") from exc
        result.update(changed=True, plotted=True, msg=f"{dest} drawn: {result['curves']} curves")
        return result
