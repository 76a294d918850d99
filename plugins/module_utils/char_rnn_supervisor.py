# Copyright: rnn_bootstrap maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run ``th train.lua`` for the launcher and look after it and its checkpoint folder.

* ``Tee`` copies every line to standard output (the journal) and to the run's log file;
* ``run_trainer`` runs train.lua, forwards systemctl's signals to it, calls back once each
  checkpoint is complete, and stops it when the ``SpeedWatch`` (char_rnn_threads) asks for a new
  probe or the ``DiskGuard`` finds the space short;
* ``prune`` keeps the best and the newest N valid checkpoints (checkpoints.retention: the same
  "valid" and "best" as checkpoint_info); ``remove_cut_short`` removes what a stopped train.lua
  had begun; ``supersede`` moves the checkpoints of a previous model aside;
* ``DiskGuard`` stops train.lua before a checkpoint would take the checkpoint folder's file system
  below ``min_free_mb`` (the next checkpoint is taken to be the newest one's size plus its growth).

Plain Python 3.8+ with no Ansible imports: the char_rnn_train role copies it beside the launcher.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Any, Callable

if __name__.startswith("ansible_collections."):  # in the collection (the unit tests)
    from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils import char_rnn_log, checkpoints
else:  # a plain file beside the launcher on the managed host (char_rnn_train tasks/install.yml)
    import char_rnn_log
    import checkpoints

PREFIX = "char-rnn launcher:"
MB = 1024 * 1024
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Tee:
    """The run's output: every line to standard output (the journal) and to the log file."""

    def __init__(self, log_path: str) -> None:
        os.makedirs(os.path.dirname(log_path) or ".", exist_ok=True)
        self.log = open(log_path, "ab", buffering=0)  # noqa: SIM115 (lives as long as the process)

    def offset(self) -> int:
        return self.log.seek(0, os.SEEK_END)

    def write(self, data: bytes) -> None:
        self.log.write(data)
        try:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        except (BrokenPipeError, ValueError):
            pass

    def say(self, text: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.write(f"{PREFIX} {stamp} {text}\n".encode())

    def close(self) -> None:
        self.log.close()


# ----------------------------------------------------------------------------- disk space


def next_checkpoint_size(newest_size: int, eval_val_every: int) -> int:
    """What the next checkpoint will take: the newest one grown by train.lua's loss tables.

    A checkpoint holds train_losses (one number -> number entry, 24 bytes, per iteration so far)
    and val_losses (one per checkpoint) beside the weights, so each is larger than the last.
    """
    if newest_size <= 0:
        return 0
    return newest_size + 24 * (max(1, eval_val_every) + 1) + 4096


class DiskGuard:
    """Tells when free space on the checkpoint folder's file system is too low for the next checkpoint.

    ``short()`` compares the space available to the training user (statvfs f_bavail) with the floor
    plus the next checkpoint's size. ``feed`` takes train.lua's output line by line: it checks when
    train.lua starts the evaluation that comes before a save, when it announces the save, and
    otherwise at most every ``every`` seconds; it returns the reason to stop, or None.
    """

    def __init__(self, directory: str, floor_mb: int, checkpoint_size: int = 0, statvfs: Any = os.statvfs,
                 clock: Any = time.monotonic, every: float = 2.0) -> None:  # fmt: skip
        self.directory, self.floor, self.checkpoint_size = directory, max(0, floor_mb) * MB, checkpoint_size
        self.statvfs, self.clock, self.every = statvfs, clock, every
        self.checked = -math.inf

    def free(self) -> int:
        st = self.statvfs(self.directory)
        return st.f_bavail * st.f_frsize

    def short(self) -> str | None:
        self.checked = self.clock()
        free = self.free()
        if free >= self.floor + self.checkpoint_size:
            return None
        return (
            f"{free / MB:.1f} MB free in {self.directory}, less than char_rnn_train_min_free_mb "
            f"{self.floor // MB} MB plus {self.checkpoint_size / MB:.1f} MB for the next checkpoint"
        )

    def feed(self, line: str) -> str | None:
        evaluating = char_rnn_log.EVALUATING_RE.search(line)
        if (evaluating and evaluating.group("split") == "2") or char_rnn_log.CHECKPOINT_RE.search(line):
            return self.short()
        if self.clock() - self.checked >= self.every:
            return self.short()
        return None


# ----------------------------------------------------------------------------- checkpoint folder


def prune(directory: str, savefile: str, keep: int, tee: Tee, training: bool = False) -> list[str]:
    """Remove all but the best and the newest ``keep`` valid checkpoints of ``savefile``; the paths removed.

    While train.lua runs (``training``), a file that is not complete may be the one it is writing
    (it can be ahead of the output read so far): invalid files are then left for later.
    """
    if keep <= 0:
        return []
    entries = checkpoints.discover(directory, savefile)["checkpoints"]
    best = checkpoints.best_of(entries)
    removed = []
    for entry in checkpoints.retention(entries, keep)["remove"]:
        if training and not entry["valid"]:
            continue
        try:
            os.remove(entry["path"])
        except FileNotFoundError:
            continue
        removed.append(entry["path"])
        why = "cut short" if not entry["valid"] else f"keeping the newest {keep} and the best ({best['name']})"
        tee.say(f"removed checkpoint {entry['name']}: {why}")
    return removed


def remove_cut_short(directory: str, savefile: str, since: float, tee: Tee) -> None:
    """Remove the invalid checkpoints of ``savefile`` written since ``since`` (by the train.lua just stopped)."""
    for entry in checkpoints.discover(directory, savefile)["checkpoints"]:
        if not entry["valid"] and entry["mtime"] >= since - 1:
            with contextlib.suppress(FileNotFoundError):
                os.remove(entry["path"])
                tee.say(f"removed {entry['name']}: train.lua stopped while writing it ({entry['invalid_reason']})")


def supersede(paths: list[str], directory: str, tee: Tee) -> None:
    """Move the checkpoints of a previous model to ``superseded-<time>/`` in ``directory``."""
    if not paths:
        return
    dest = os.path.join(directory, "superseded-" + time.strftime("%Y%m%dT%H%M%S"))
    os.makedirs(dest, exist_ok=True)
    for path in paths:
        shutil.move(path, os.path.join(dest, os.path.basename(path)))
    tee.say(f"moved {len(paths)} checkpoint(s) of the previous model to {dest}")


# ----------------------------------------------------------------------------- train.lua


class LowDisk:
    """run_trainer's result when the DiskGuard stopped train.lua."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def run_trainer(
    argv: list[str],
    env: dict[str, str],
    cwd: str,
    tee: Tee,
    watch: Any = None,
    guard: DiskGuard | None = None,
    saved: Callable[[str], None] | None = None,
) -> int | str | LowDisk | None:
    """train.lua's exit status (128 + N when killed by signal N); None when stopped by systemctl;
    the reason when ``watch`` (a SpeedWatch) asked for a new probe, LowDisk when ``guard`` found the
    space short (train.lua is then stopped). ``saved(path)`` is called once each checkpoint is
    complete: at train.lua's next line of progress, or its exit."""
    child = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    stopping: list[int] = []
    reprobe: str | None = None
    low: str | None = None
    saving: str | None = None  # the checkpoint train.lua announced and may still be writing

    def forward(signum: int, _frame: Any) -> None:
        stopping.append(signum)
        if child.poll() is None:
            child.send_signal(signum)

    for signum in STOP_SIGNALS:
        signal.signal(signum, forward)
    output: Any = child.stdout  # a pipe: stdout=PIPE above
    for line in iter(output.readline, b""):
        tee.write(line)
        if stopping or reprobe is not None or low is not None:
            continue
        text = line.decode("utf-8", "replace")
        announced = char_rnn_log.CHECKPOINT_RE.search(text)
        if announced:
            saving = os.path.join(cwd, announced.group("path"))
        elif saving and char_rnn_log.PROGRESS_RE.search(text):
            if saved is not None:
                saved(saving)
            saving = None
        low = guard.feed(text) if guard is not None else None
        if low is not None:
            if child.poll() is None:
                child.terminate()
            continue
        if watch is not None:
            reprobe = watch.feed(text)
            if reprobe is not None and child.poll() is None:
                child.terminate()
    code = child.wait()
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    if saving and code == 0 and saved is not None:
        saved(saving)  # the final checkpoint, with no line of progress after it
    if low is not None and not stopping:
        tee.say(f"stopped train.lua before its next checkpoint: {low}")
        return LowDisk(low)
    if reprobe is not None and not stopping:
        tee.say(f"{reprobe}: stopped train.lua to probe the thread settings again")
        return reprobe
    if stopping:  # systemctl stop (or restart): a clean stop, not a crash to restart from
        tee.say(f"stopped by signal {stopping[0]}; the next start resumes from the newest checkpoint")
        return None
    if code < 0:
        tee.say(f"train.lua was killed by signal {-code}")
        return 128 - code
    if code:
        tee.say(f"train.lua exited with status {code}")
    return code
