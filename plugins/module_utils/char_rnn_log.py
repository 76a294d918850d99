# Copyright: rnn_bootstrap maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Parse what char-rnn's ``th train.lua`` prints into a training status summary.

Pure Python, no Ansible imports; runs on the managed host, so Python 3.8 syntax at runtime.
Patterns are searched anywhere in a line, so journald/syslog prefixes do not matter; Torch's
``print`` ends every line with a tab, which is ignored.

A log can hold several runs (``-init_from`` resumes restart the iteration counter at 1): a new
``loading data files...`` / preprocessing / ``creating an ...`` header after a run has started
begins a new segment. The summary describes the last segment and counts ``segments``/``restarts``.
"""

from __future__ import annotations

import bisect
import math
import os
import re
import statistics
from typing import Any

# Imported by its full name in the collection (modules, through AnsiballZ; unit tests), or as a plain
# file beside the launcher and checkpoints.py on the managed host (char_rnn_train tasks/install.yml).
# Told apart by __name__: AnsiballZ's zipimport leaves __package__ unset while the module runs.
if __name__.startswith("ansible_collections."):
    from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils.checkpoints import (
        NAME_PATTERN,
        checkpoint_iteration,
    )
else:
    from checkpoints import NAME_PATTERN, checkpoint_iteration

PROGRESS_RE = re.compile(
    r"(?P<i>\d+)/(?P<total>\d+) \(epoch (?P<epoch>[-+\w.]+)\), train_loss = (?P<loss>[-+\w.]+), "
    r"grad/param norm = (?P<norm>[-+\w.]+), time/batch = (?P<time>[-+\w.]+)s"
)
# The path train.lua announces; its file name by the one rule (checkpoints.NAME_PATTERN).
CHECKPOINT_RE = re.compile(rf"saving checkpoint to (?P<path>\S*?{NAME_PATTERN})")
EVALUATING_RE = re.compile(r"evaluating loss over split index (?P<split>\d+)")
DATA_BATCHES_RE = re.compile(
    r"data load done\. Number of data batches in train: (?P<train>\d+), val: (?P<val>\d+), test: (?P<test>\d+)"
)
VOCAB_RE = re.compile(r"vocab size: (?P<n>\d+)")
CREATING_RE = re.compile(r"creating an (?P<model>\w+) with (?P<layers>\d+) layers")
PARAMS_RE = re.compile(r"number of parameters in the model: (?P<n>\d+)")
INIT_FROM_RE = re.compile(r"loading a model from checkpoint (?P<path>.+?)\s*$")
OVERWRITING_RE = re.compile(
    r"overwriting rnn_size=(?P<rnn_size>\d+), num_layers=(?P<layers>\d+), model=(?P<model>\w+) based on the checkpoint"
)
LOADING_DATA_RE = re.compile(r"loading data files\.\.\.")
GPU_RE = re.compile(r"package (?:cunn|cutorch|clnn|cltorch) not found!|using (?:CUDA|OpenCL) on GPU")
PREPRO_RE = re.compile(r"vocab\.t7 and data\.t7 do not exist|one-time setup: preprocessing input text file")
ERROR_RES = (
    # "luajit: train.lua:123: message" / "/root/torch/install/bin/luajit: ...": an uncaught Lua error
    re.compile(r"(?:^|\s)(?:\S*/)?(?:luajit|lua|lua5\.[1-4]|th): .+"),
    re.compile(r"read error: .+"),
    re.compile(r"loss is exploding, aborting\."),
    re.compile(r"loss is NaN\..*"),
    re.compile(r"(?:cuda runtime error|out of memory|not enough memory).*", re.IGNORECASE),
    re.compile(r"\b(?:Segmentation fault|Killed)\b.*"),
)
TRACEBACK_RE = re.compile(r"stack traceback:")
MAX_ERRORS = 20


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


class Segment:
    """One run of train.lua within the log."""

    def __init__(self) -> None:
        self.info: dict[str, Any] = {}
        self.progress: list[dict[str, Any]] = []
        self.checkpoints: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.has_data = False
        self.has_model = False
        self.evaluating = False
        self.lines = 0

    @property
    def started(self) -> bool:
        return bool(self.progress or self.checkpoints)

    def add_error(self, text: str) -> None:
        text = text.strip()
        if text and text not in self.errors and len(self.errors) < MAX_ERRORS:
            self.errors.append(text)


class LogParser:
    """Feed lines with ``feed``; ``summary()`` describes the last segment."""

    def __init__(self, median_of: int = 10) -> None:
        self.median_of = max(1, median_of)
        self.segments: list[Segment] = [Segment()]
        self._previous = ""

    @property
    def current(self) -> Segment:
        return self.segments[-1]

    def _new_segment_if(self, condition: bool) -> Segment:
        if condition:
            self.segments.append(Segment())
        return self.current

    def feed(self, line: str) -> None:
        line = line.rstrip("\r\n").rstrip("\t ")
        if not line:
            return
        if not (self._header(line) or self._progress(line) or self._evaluation(line)):
            self._error(line)
        self.current.lines += 1
        self._previous = line

    def _header(self, line: str) -> bool:
        seg = self.current
        if GPU_RE.search(line):  # printed first, before the data is loaded
            self._new_segment_if(seg.has_data or seg.has_model or seg.started)
            return True
        if PREPRO_RE.search(line):
            self._new_segment_if(seg.has_data or seg.has_model or seg.started)
            return True
        if LOADING_DATA_RE.search(line):
            self._new_segment_if(seg.has_data or seg.has_model or seg.started).has_data = True
            return True
        match = CREATING_RE.search(line)
        if match:
            seg = self._new_segment_if(seg.has_model or seg.started)
            seg.has_model = True
            seg.info.update(model=match.group("model"), num_layers=int(match.group("layers")))
            return True
        match = INIT_FROM_RE.search(line)
        if match:
            seg = self._new_segment_if(seg.has_model or seg.started)
            seg.has_model = True
            seg.info["init_from"] = match.group("path")
            return True
        return self._header_detail(line)

    def _header_detail(self, line: str) -> bool:
        info = self.current.info
        match = OVERWRITING_RE.search(line)
        if match:
            info.update(
                rnn_size=int(match.group("rnn_size")),
                num_layers=int(match.group("layers")),
                model=match.group("model"),
            )
            return True
        match = DATA_BATCHES_RE.search(line)
        if match:
            info.update(
                train_batches=int(match.group("train")),
                val_batches=int(match.group("val")),
                test_batches=int(match.group("test")),
            )
            return True
        match = VOCAB_RE.search(line)
        if match and "checkpoint_vocab_size" not in line:
            info["vocab_size"] = int(match.group("n"))
            return True
        match = PARAMS_RE.search(line)
        if match:
            info["num_parameters"] = int(match.group("n"))
            return True
        return False

    def _progress(self, line: str) -> bool:
        match = PROGRESS_RE.search(line)
        if not match:
            return False
        seg = self.current
        seg.evaluating = False
        seg.progress.append(
            {
                "iteration": int(match.group("i")),
                "total": int(match.group("total")),
                "epoch": _number(match.group("epoch")),
                "train_loss": _number(match.group("loss")),
                "grad_param_norm": _number(match.group("norm")),
                "seconds_per_batch": _number(match.group("time")),
            }
        )
        return True

    def _evaluation(self, line: str) -> bool:
        seg = self.current
        if EVALUATING_RE.search(line):
            seg.evaluating = True
            return True
        match = CHECKPOINT_RE.search(line)
        if match:
            seg.evaluating = False
            seg.checkpoints.append(
                {
                    "path": match.group("path"),
                    "epoch": _number(match.group("epoch")),
                    "val_loss": _number(match.group("val_loss")),
                    "after_iteration": seg.progress[-1]["iteration"] if seg.progress else 0,
                }
            )
            return True
        return False

    def _error(self, line: str) -> None:
        if TRACEBACK_RE.search(line):
            if self._previous and not any(r.search(self._previous) for r in ERROR_RES):
                self.current.add_error(self._previous)
            return
        for regex in ERROR_RES:
            match = regex.search(line)
            if match:
                self.current.add_error(match.group(0))
                return

    def summary(self) -> dict[str, Any]:
        segments = [s for s in self.segments if s.lines]
        return summarize(segments[-1] if segments else self.current, len(segments), self.median_of)


def _checkpoint_iteration(seg: Segment, checkpoint: dict[str, Any], total: int | None) -> int | None:
    """Iteration of a checkpoint saved after the last progress line (train.lua prints none for it).

    train.lua saves before printing that iteration's progress line, so a checkpoint followed by
    no progress line is at least one past the last line (checkpoints.checkpoint_iteration).
    """
    ntrain = seg.info.get("train_batches")
    last = seg.progress[-1] if seg.progress else {}
    if not ntrain and last.get("epoch"):  # header not read (tail_bytes): iterations per epoch
        ntrain = round(last["iteration"] / last["epoch"])
    epoch = checkpoint["epoch"]
    if not ntrain or epoch is None:
        return None
    estimate = checkpoint_iteration(epoch, ntrain, after=checkpoint["after_iteration"])
    return min(estimate, total) if total else estimate


def summarize(seg: Segment, segment_count: int, median_of: int = 10) -> dict[str, Any]:
    """The status of one segment as a flat dict."""
    last = seg.progress[-1] if seg.progress else {}
    total = last.get("total")
    iteration = last.get("iteration")
    epoch = last.get("epoch")
    checkpoint = seg.checkpoints[-1] if seg.checkpoints else None
    if checkpoint is not None and checkpoint["after_iteration"] == (iteration or 0):
        estimate = _checkpoint_iteration(seg, checkpoint, total)
        if estimate is not None and estimate > (iteration or 0):
            iteration, epoch = estimate, checkpoint["epoch"]
    times = [p["seconds_per_batch"] for p in seg.progress[-median_of:] if p["seconds_per_batch"] is not None]
    seconds_per_batch = round(statistics.median(times), 6) if times else None
    eta = None
    if total is not None and iteration is not None and seconds_per_batch is not None:
        eta = round(max(0, total - iteration) * seconds_per_batch, 3)
    result: dict[str, Any] = {
        "segments": segment_count,
        "restarts": max(0, segment_count - 1),
        "started": seg.started,
        "iteration": iteration,
        "total_iterations": total,
        "epoch": epoch,
        "finished": bool(total and iteration is not None and iteration >= total),
        "evaluating": seg.evaluating,
        "train_loss": last.get("train_loss"),
        "grad_param_norm": last.get("grad_param_norm"),
        "seconds_per_batch": seconds_per_batch,
        "eta_seconds": eta,
        "val_loss": checkpoint["val_loss"] if checkpoint else None,
        "last_checkpoint": checkpoint["path"] if checkpoint else None,
        "checkpoints_saved": [c["path"] for c in seg.checkpoints],
        "progress_lines": len(seg.progress),
        "errors": list(seg.errors),
    }
    for key in (
        "model",
        "num_layers",
        "rnn_size",
        "vocab_size",
        "num_parameters",
        "train_batches",
        "val_batches",
        "test_batches",
        "init_from",
    ):
        result[key] = seg.info.get(key)
    return result


def parse_lines(lines: Any, median_of: int = 10) -> dict[str, Any]:
    parser = LogParser(median_of)
    for line in lines:
        parser.feed(line)
    return parser.summary()


def parse_text(text: str, median_of: int = 10, partial_first_line: bool = False) -> dict[str, Any]:
    """Parse a whole log; with ``partial_first_line`` the first line (cut by a tail read) is dropped."""
    lines = text.splitlines()
    if partial_first_line and lines:
        lines = lines[1:]
    return parse_lines(lines, median_of)


def read_tail(path: str, tail_bytes: int = 0) -> tuple[str, bool, int]:
    """Text of ``path`` (only its last ``tail_bytes`` when > 0), whether it was cut, and its size."""
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        size = fh.tell()
        start = max(0, size - tail_bytes) if tail_bytes and tail_bytes > 0 else 0
        fh.seek(start)
        data = fh.read()
    return data.decode("utf-8", errors="replace"), start > 0, size


# ----------------------------------------------------------------------------- loss history


def parser_for_text(text: str, median_of: int = 10, partial_first_line: bool = False) -> LogParser:
    """A LogParser fed a whole log (as parse_text), for callers that want more than the summary."""
    parser = LogParser(median_of)
    lines = text.splitlines()
    for line in lines[1:] if partial_first_line and lines else lines:
        parser.feed(line)
    return parser


def downsample(points: list[Any], max_points: int) -> list[Any]:
    """At most ``max_points`` of ``points``, evenly spread, the first and the last kept."""
    count = len(points)
    if max_points < 1 or count <= max_points:
        return list(points)
    if max_points == 1:
        return [points[-1]]
    step = (count - 1) / (max_points - 1)  # > 1, so the rounded indices are distinct
    return [points[round(k * step)] for k in range(max_points)]


def _checkpoint_iterations(seg: Segment) -> list[int | None]:
    """The (segment-local) iteration at which each checkpoint of ``seg`` was saved.

    train.lua saves at iteration i before printing i's progress line, so with print_every dividing
    eval_val_every the next progress line is i itself (its epoch, printed %.3f, rounds to the
    checkpoint's %.2f). Otherwise: epoch x train batches, between the progress lines around it.
    """
    iterations = [p["iteration"] for p in seg.progress]
    total = seg.progress[-1]["total"] if seg.progress else None
    found: list[int | None] = []
    for checkpoint in seg.checkpoints:
        index = bisect.bisect_right(iterations, checkpoint["after_iteration"])
        following = seg.progress[index] if index < len(seg.progress) else None
        epoch = checkpoint["epoch"]
        if (
            following
            and epoch is not None
            and following["epoch"] is not None
            and f"{following['epoch']:.2f}" == f"{epoch:.2f}"
        ):
            found.append(following["iteration"])
            continue
        estimate = _checkpoint_iteration(seg, checkpoint, total)
        if estimate is not None and following:
            estimate = min(estimate, following["iteration"])
        found.append(estimate)
    return found


def loss_history(parser: LogParser, max_points: int = 500) -> dict[str, Any]:
    """Training and validation loss against iteration for the run the log ends with.

    Segments are stitched: one that resumed (``-init_from``) from a checkpoint announced earlier in
    the log continues at that checkpoint's iteration (points after it, lost to the crash and done
    again, are dropped); one that resumed from a checkpoint not in what was read continues after
    the last iteration seen; one that started afresh begins a new run and drops what came before.
    ``train`` and ``val`` are lists of ``[iteration, loss]`` (non-finite losses left out), each
    downsampled to at most ``max_points``.
    """
    train: list[list[float]] = []
    val: list[list[float]] = []
    saved_at: dict[str, int] = {}  # checkpoint file name -> iteration of the run
    stitched = 0
    for seg in parser.segments:
        if not seg.lines:
            continue
        init_from = seg.info.get("init_from")
        if init_from:
            offset = saved_at.get(os.path.basename(init_from))
            if offset is None:
                offset = int(max([p[0] for p in train[-1:] + val[-1:]], default=0))
            train = [p for p in train if p[0] <= offset]
            val = [p for p in val if p[0] <= offset]
        else:
            offset = 0
            if seg.has_model or seg.started:  # a fresh run: what came before belongs to another one
                train, val, saved_at, stitched = [], [], {}, 0
        stitched += 1
        for progress in seg.progress:
            loss = progress["train_loss"]
            if loss is not None and math.isfinite(loss):
                train.append([offset + progress["iteration"], loss])
        for checkpoint, iteration in zip(seg.checkpoints, _checkpoint_iterations(seg)):
            if iteration is None:
                continue
            saved_at[os.path.basename(checkpoint["path"])] = offset + iteration
            loss = checkpoint["val_loss"]
            if loss is not None and math.isfinite(loss):
                val.append([offset + iteration, loss])
    return {
        "train": downsample(train, max_points),
        "val": downsample(val, max_points),
        "train_points": len(train),
        "val_points": len(val),
        "segments": stitched,
    }
