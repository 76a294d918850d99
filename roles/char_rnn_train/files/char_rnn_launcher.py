# Copyright: rnn_bootstrap maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Start (or resume) one char-rnn training run; installed by the role char_rnn_train.

    char_rnn_launcher.py /etc/char-rnn/RUN.json

The systemd unit char-rnn-train-RUN.service runs this as the training user. It:

* finds the newest *valid* checkpoint of the run (checkpoints.py, the module_utils that the
  module checkpoint_info uses, shipped next to this file), ignoring files cut short by a crash;
* works out how far the whole run has got: char-rnn's ``-init_from`` restores the weights but
  restarts the iteration counter at 1 and the learning-rate schedule at its start, and names
  its checkpoints with the epoch *of that segment*. The state file records, for every segment,
  when it started and how many iterations and epochs came before it, so a checkpoint's absolute
  position is its segment's offset plus its own;
* gives train.lua the remaining epochs (``-max_epochs``), the learning rate decayed as the
  uninterrupted run would have decayed it, and a ``-learning_rate_decay_after`` shifted by the
  epochs already done;
* chooses the thread settings: ``probe`` times a few settings on this run's model at its first
  start and keeps the fastest, then watches the run's own time/batch: when it drifts far from
  the probe's figure (other work took the CPUs, or left), it stops train.lua (at the next
  checkpoint unless the run got twice as slow), probes again and resumes; ``auto`` takes passive
  OpenMP waiting; a dict fixes them;
* runs ``th train.lua`` with its output line-buffered and copies every line both to standard
  output (the journal) and to the run's log file;
* exits 0 without training when the run has already reached max_epochs;
* with ``keep_checkpoints`` N > 0, removes after every checkpoint all but the best and the newest N
  valid ones (checkpoints.retention: the same "valid" and "best" as checkpoint_info);
* stops train.lua before a checkpoint would take the checkpoint folder's file system below
  ``min_free_mb`` (the next checkpoint is taken to be the newest one's size plus its growth), and
  does not start it when the space is short already: the reason goes to the journal, the log and
  the state file (status.yml shows it), and the exit status is EXIT_LOW_DISK, which the unit does
  not restart on (``RestartPreventExitStatus``): free space, then start the unit again to resume.

A change of what makes the model (data set, model, rnn_size, num_layers, seq_length, batch_size,
train/val fractions) starts a new run: the old checkpoints of this savefile move to a
``superseded-<time>/`` folder of the checkpoint directory.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import blas  # plugins/module_utils/blas.py (torch_install's BLAS check)
import char_rnn_log  # plugins/module_utils/char_rnn_log.py (the module train_progress's parser)
import checkpoints
import corpus
import host  # plugins/module_utils/host.py

STATE_VERSION = 1
# The options that define the model and how the data is cut into batches: changing any of them
# makes the old checkpoints useless for -init_from (or changes what an iteration is).
MODEL_KEYS = ("data_dir", "model", "rnn_size", "num_layers", "seq_length", "batch_size", "train_frac", "val_frac")
PREFIX = "char-rnn launcher:"
EXIT_LOW_DISK = 75  # EX_TEMPFAIL; the unit's RestartPreventExitStatus: not a crash to restart from
MB = 1024 * 1024


# ----------------------------------------------------------------------------- pure decisions


def model_key(options: dict[str, Any]) -> dict[str, Any]:
    return {key: options.get(key) for key in MODEL_KEYS}


def total_iterations(max_epochs: float, ntrain: int) -> int:
    """What train.lua's ``for i = 1, max_epochs * ntrain`` runs."""
    return math.floor(max_epochs * ntrain + 1e-9)


def epochs_for(iterations: int, ntrain: int) -> float:
    """The smallest -max_epochs for which train.lua's max_epochs * ntrain is exactly ``iterations``.

    r / n * n is not always r in floating point (1 / 49 * 49 < 1), and train.lua saves its final
    checkpoint only when i == max_epochs * ntrain; step up to the first double that works.
    """
    value = iterations / ntrain
    for _step in range(64):
        if value * ntrain >= iterations:
            return value
        value = math.nextafter(value, math.inf) if hasattr(math, "nextafter") else value + value * 2**-52
    return value


def checkpoint_iteration(epoch: float, ntrain: int, eval_val_every: int, segment_total: int | None) -> int:
    """The iteration of a checkpoint whose name says ``epoch`` (two decimals) in its segment.

    train.lua saves at multiples of eval_val_every and at its last iteration; the name's epoch
    is rounded to 0.01, so the estimate snaps to the nearest of those.
    """
    estimate = epoch * ntrain
    candidates = []
    if eval_val_every > 0:
        candidates.append(round(estimate / eval_val_every) * eval_val_every)
    if segment_total:
        candidates.append(segment_total)
    candidates = [c for c in candidates if c > 0 and abs(c / ntrain - epoch) <= 0.005 + 1e-9]
    if candidates:
        return min(candidates, key=lambda c: abs(c - estimate))
    return max(1, round(estimate))


def decays_done(epochs_done: float, decay: float, decay_after: float) -> int:
    """How many times train.lua has decayed the learning rate after ``epochs_done`` epochs.

    It multiplies by learning_rate_decay at the end of every whole epoch k >= decay_after.
    """
    if decay >= 1:
        return 0
    whole = math.floor(epochs_done + 1e-9)
    first = max(1, math.ceil(decay_after - 1e-9))
    return max(0, whole - first + 1)


def segment_of(state: dict[str, Any] | None, mtime: float) -> dict[str, Any] | None:
    """The segment that wrote a checkpoint modified at ``mtime`` (the last one started before it)."""
    if not state:
        return None
    found = None
    for segment in state.get("segments", []):
        if segment["started"] <= mtime:
            found = segment
    return found


def plan(
    config: dict[str, Any], state: dict[str, Any] | None, entries: list[dict[str, Any]], ntrain: int, now: float
) -> dict[str, Any]:
    """Decide what this start does. Returns action fresh|resume|finished and train.lua's options."""
    options = dict(config["options"])
    max_epochs = float(options["max_epochs"])
    total = total_iterations(max_epochs, ntrain)
    key = model_key(options)
    decision: dict[str, Any] = {"ntrain": ntrain, "total_iterations": total, "new_run": False, "supersede": []}

    if state is not None and state.get("model_key") != key:
        decision["new_run"] = True
        decision["reason"] = "the model options changed: starting a new run"
        decision["supersede"] = [e["path"] for e in entries]
        state = None
        entries = []
    elif state is None and entries:
        decision["reason"] = "no launcher state: the checkpoints found are taken as this run's first segment"
    run_started = state["run_started"] if state else now
    usable = [e for e in entries if e["mtime"] >= run_started - 1 or not state]
    newest = checkpoints.latest_of(usable)
    decision["invalid"] = [e["path"] for e in entries if not e["valid"]]

    if newest is None:
        offset_iterations, offset_epochs = 0, 0.0
        decision.update(action="fresh", init_from=None, checkpoint=None)
    else:
        segment = segment_of(state, newest["mtime"]) or {"offset_iterations": 0, "offset_epochs": 0.0, "total": None}
        segment_total = segment.get("total")
        local = checkpoint_iteration(newest["epoch"], ntrain, int(options["eval_val_every"]), segment_total)
        offset_iterations = int(segment["offset_iterations"]) + local
        offset_iterations = min(offset_iterations, total)
        offset_epochs = offset_iterations / ntrain
        decision.update(init_from=newest["path"], checkpoint=newest["name"])
        decision["action"] = "finished" if offset_iterations >= total else "resume"

    remaining = total - offset_iterations
    learning_rate = float(options["learning_rate"])
    decays = decays_done(
        offset_epochs, float(options["learning_rate_decay"]), float(options["learning_rate_decay_after"])
    )
    if decays:
        learning_rate *= float(options["learning_rate_decay"]) ** decays
    decision.update(
        offset_iterations=offset_iterations,
        offset_epochs=offset_epochs,
        remaining_iterations=remaining,
        decays=decays,
        learning_rate=learning_rate,
        run_started=run_started,
    )
    if decision["action"] == "finished":
        return decision

    options["max_epochs"] = epochs_for(remaining, ntrain)
    options["learning_rate"] = learning_rate
    if offset_epochs:
        options["learning_rate_decay_after"] = (
            math.ceil(float(options["learning_rate_decay_after"]) - 1e-9) - offset_epochs
        )
    options["init_from"] = decision["init_from"] or ""
    decision["options"] = options
    return decision


def train_args(options: dict[str, Any]) -> list[str]:
    args = []
    for name, value in options.items():
        if value is None:
            continue
        if isinstance(value, float):
            text = repr(value)
        elif isinstance(value, bool):
            text = "1" if value else "0"
        else:
            text = str(value)
        args += [f"-{name}", text]
    return args


def new_state(config: dict[str, Any], decision: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": STATE_VERSION,
        "run": config["run"],
        "savefile": config["options"]["savefile"],
        "model_key": model_key(config["options"]),
        "run_started": decision["run_started"],
        "segments": [],
    }


def add_segment(state: dict[str, Any], decision: dict[str, Any], now: float, log_offset: int) -> dict[str, Any]:
    state["total_iterations"] = decision["total_iterations"]
    state["max_epochs"] = decision["total_iterations"] / decision["ntrain"]
    state["ntrain"] = decision["ntrain"]
    state["finished"] = decision["action"] == "finished"
    if decision["action"] == "finished":
        return state
    state["segments"].append(
        {
            "started": now,
            "offset_iterations": decision["offset_iterations"],
            "offset_epochs": decision["offset_epochs"],
            "total": decision["remaining_iterations"],
            "init_from": decision["init_from"],
            "learning_rate": decision["learning_rate"],
            "log_offset": log_offset,
            "threads": decision.get("threads", {}),
        }
    )
    return state


# ----------------------------------------------------------------------------- threads


def blas_build(th: str, ldd: str = "ldd", env: dict[str, str] | None = None) -> tuple[str, str]:
    """(openmp|pthread|serial|unknown, resolved path): the OpenBLAS that libTH.so (next to th) loads."""
    real = os.path.realpath(th)
    lib = os.path.join(os.path.dirname(os.path.dirname(real)), "lib", "libTH.so")
    if not os.path.exists(lib):
        return "unknown", ""
    try:
        out = subprocess.run([ldd, lib], capture_output=True, text=True, timeout=30, check=False, env=env).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown", ""
    _name, resolved = blas.parse_ldd_blas(out)
    if not resolved or "openblas" not in os.path.basename(resolved).lower():
        return "unknown", ""
    return blas.openblas_variant(resolved), os.path.realpath(resolved)


# GOMP_SPINCOUNT of the bounded-spin candidate: libgomp spins this many times (a few ns each)
# before it sleeps, against 300000 (about 3 ms) by default and 0 with OMP_WAIT_POLICY=PASSIVE.
BOUNDED_SPIN = "300"
REPROBE_EVERY = 600.0  # seconds: the speed watch asks for a new probe at most this often
WATCH_WINDOW = 100  # batches whose median time/batch the speed watch compares with the probe's
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def openmp_openblas_dir(build: str, resolved: str) -> str:
    """Debian's OpenMP OpenBLAS directory beside the pthread OpenBLAS that libTH loads, or ''.

    With it first in LD_LIBRARY_PATH, Torch's loops and the BLAS share one pool of OpenMP threads.
    """
    if build != "pthread" or not resolved:
        return ""
    directory = os.path.join(os.path.dirname(os.path.dirname(resolved)), "openblas-openmp")
    return directory if os.path.exists(os.path.join(directory, "libopenblas.so.0")) else ""


def with_threads(base: dict[str, str], threads: dict[str, str]) -> dict[str, str]:
    """``base`` with the thread settings; an LD_LIBRARY_PATH of theirs goes before the one of ``base``."""
    env = {**base, **threads}
    if threads.get("LD_LIBRARY_PATH") and base.get("LD_LIBRARY_PATH"):
        env["LD_LIBRARY_PATH"] = threads["LD_LIBRARY_PATH"] + os.pathsep + base["LD_LIBRARY_PATH"]
    return env


def known_good_threads(build: str, cpus: int) -> dict[str, str]:
    """Thread settings measured fast on every OpenBLAS build (tests/benchmarks/threads.py, README).

    Torch's OpenMP loops and a pthread OpenBLAS each start a thread per CPU, and OpenMP's default
    busy-waiting between loops starves the BLAS threads (4-8x slower on 2 CPUs). With the OpenMP
    OpenBLAS, busy-waiting is fast on an idle host but collapses as soon as other work wants the
    CPUs (0.095 -> 0.6 s/batch measured). Passive waiting is close to the best on both builds and
    stays there under load. ``build`` is reported, not needed: the answer is the same.
    """
    del build
    return {"OMP_NUM_THREADS": str(max(1, cpus)), "OMP_WAIT_POLICY": "PASSIVE"}


def thread_environment(threads: Any, th: str, cpus: int) -> tuple[dict[str, str], str]:
    """(environment, why) from the configured char_rnn_train_threads (auto or a dict)."""
    if threads in (None, "auto", "probe", {}):
        build, _resolved = blas_build(th)
        return known_good_threads(build, cpus), f"auto, known-good for the {build} OpenBLAS on {cpus} CPUs"
    env = {}
    names = {"omp": "OMP_NUM_THREADS", "openblas": "OPENBLAS_NUM_THREADS", "wait_policy": "OMP_WAIT_POLICY"}
    for key, value in dict(threads).items():
        if value is not None and value != "":
            env[names.get(key, key)] = str(value)
    return env, "configured"


def probe_candidates(th: str, cpus: int) -> list[dict[str, str]]:
    """Thread settings worth timing: the known-good one and the others that do not busy-wait for long.

    OpenMP's default ACTIVE policy (and libgomp's default spin of about 3 ms before sleeping) is
    left out: a short probe on a quiet moment can find it fastest, and it is several times slower
    as soon as the host gets busy. A short bounded spin (GOMP_SPINCOUNT, in libgomp's spins of
    a few ns) with a single-threaded BLAS keeps most of the idle speed of spinning. When the th
    links Debian's pthread OpenBLAS and the OpenMP build is installed beside it, that build with
    passive waiting is a candidate too (through LD_LIBRARY_PATH). If the choice loses when other
    work comes, the speed watch of the run probes again (tests/benchmarks/threads.py, README).
    """
    build, resolved = blas_build(th)
    n = str(max(1, cpus))
    candidates = [
        known_good_threads(build, cpus),
        {"OMP_NUM_THREADS": "1"},
        {"OMP_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"},
        {"OMP_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": "1", "GOMP_SPINCOUNT": BOUNDED_SPIN},
    ]
    openmp_dir = openmp_openblas_dir(build, resolved)
    if openmp_dir:  # one thread pool for Torch and the BLAS, passive: near the best idle and loaded
        candidates.append({"LD_LIBRARY_PATH": openmp_dir, "OMP_NUM_THREADS": n, "OMP_WAIT_POLICY": "PASSIVE"})
    unique: list[dict[str, str]] = []
    for env in candidates:
        if env not in unique:
            unique.append(env)
    return unique


def probe_args(options: dict[str, Any], ntrain: int, batches: int, directory: str) -> list[str]:
    """train.lua's options for a timing run: the same model, a fresh start, no checkpoint."""
    probe = dict(options)
    probe.update(
        max_epochs=(batches + 0.5) / ntrain,  # runs `batches` iterations, never reaches the final save
        eval_val_every=10**9,
        init_from="",
        checkpoint_dir=directory,
        savefile="probe",
        print_every=1,
    )
    return train_args(probe)


def choose_fastest(timings: list[tuple[dict[str, str], float | None]]) -> tuple[dict[str, str], float] | None:
    measured = [(env, spb) for env, spb in timings if spb is not None]
    return min(measured, key=lambda item: item[1]) if measured else None


def probe_threads(config: dict[str, Any], ntrain: int, cpus: int, tee: Tee, batches: int = 12) -> tuple:
    """Time each candidate for a few batches of this run's model; (environment, why, s/batch or None)."""
    options = config["options"]
    directory = os.path.join(os.path.dirname(config["state_path"]), f".probe-{config['run']}")
    os.makedirs(directory, exist_ok=True)
    timings = []
    base = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    base.update({k: str(v) for k, v in (config.get("environment") or {}).items()})
    for env in probe_candidates(config["th"], cpus):
        argv = [config["th"], "train.lua", *probe_args(options, ntrain, batches, directory)]
        try:
            out = subprocess.run(
                argv, cwd=config["char_rnn_dir"], env=with_threads(base, env), capture_output=True, text=True,
                timeout=60 + 30 * batches, check=False,
            ).stdout  # fmt: skip
            spb = char_rnn_log.parse_text(out, median_of=max(1, batches - 3))["seconds_per_batch"]
        except subprocess.TimeoutExpired:
            spb = None
        timings.append((env, spb))
        shown = f"{spb:.4f} s/batch" if spb is not None else "no timing"
        tee.say("probe " + " ".join(f"{k}={v}" for k, v in sorted(env.items())) + f": {shown}")
    shutil.rmtree(directory, ignore_errors=True)
    best = choose_fastest(timings)
    if best is None:
        env, why = thread_environment("auto", config["th"], cpus)
        return env, "probe gave no timing; " + why, None
    return best[0], f"probe of {len(timings)} settings x {batches} batches, fastest {best[1]:.4f} s/batch", best[1]


class SpeedWatch:
    """Tells when train.lua's own time/batch has drifted far from the probe's figure for its setting.

    ``feed`` takes train.lua's output line by line and returns a reason to probe again, or None.
    The median of the last ``window`` batches is compared with ``reference``: ``urgent`` times
    slower (the setting collapses under other work) asks at once; ``change`` times slower or faster
    (other work came or went) asks once the next checkpoint is written (at the first progress line
    after "saving checkpoint", as train.lua prints that line before it writes), so that at most one
    iteration is lost. Nothing is asked before ``not_before`` (time.time()), so probes stay rare.
    """

    def __init__(self, reference: float, not_before: float = 0.0, window: int = 100, change: float = 1.5,
                 urgent: float = 2.0, clock: Any = time.time) -> None:  # fmt: skip
        self.reference, self.not_before, self.window = reference, not_before, window
        self.change, self.urgent, self.clock = change, urgent, clock
        self.times: list[float] = []
        self.pending: str | None = None
        self.saved = False

    def feed(self, line: str) -> str | None:
        if char_rnn_log.CHECKPOINT_RE.search(line):
            self.saved = True
            return None
        match = char_rnn_log.PROGRESS_RE.search(line)
        if not match or match.group("i") == match.group("total"):  # not progress, or the run's last batch
            return None
        if self.saved and self.pending:
            return self.pending
        self.saved = False
        try:
            self.times.append(float(match.group("time")))
        except ValueError:
            return None
        del self.times[: -self.window]
        if len(self.times) < self.window or self.clock() < self.not_before:
            return None
        ratio = sorted(self.times)[len(self.times) // 2] / self.reference
        why = f"time/batch {ratio:.2f}x the probe's {self.reference:.4f} s over the last {self.window} batches"
        if ratio >= self.urgent:
            return why
        self.pending = why if ratio >= self.change or ratio <= 1 / self.change else None
        return None


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


# ----------------------------------------------------------------------------- side effects


def load_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        return None


class Tee:
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


def supersede(paths: list[str], directory: str, tee: Tee) -> None:
    if not paths:
        return
    dest = os.path.join(directory, "superseded-" + time.strftime("%Y%m%dT%H%M%S"))
    os.makedirs(dest, exist_ok=True)
    for path in paths:
        shutil.move(path, os.path.join(dest, os.path.basename(path)))
    tee.say(f"moved {len(paths)} checkpoint(s) of the previous model to {dest}")


class LowDisk:
    """run_trainer's result when the DiskGuard stopped train.lua."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def run_trainer(
    argv: list[str],
    env: dict[str, str],
    cwd: str,
    tee: Tee,
    watch: SpeedWatch | None = None,
    guard: DiskGuard | None = None,
    saved: Any = None,
) -> int | str | LowDisk | None:
    """train.lua's exit status (128 + N when killed by signal N); None when stopped by systemctl;
    the reason when ``watch`` asked for a new probe, LowDisk when ``guard`` found the space short
    (train.lua is then stopped). ``saved(path)`` is called once each checkpoint is complete: at
    train.lua's next line of progress, or its exit."""
    child = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    stopping: list[int] = []
    reprobe: str | None = None
    low: str | None = None
    saving: str | None = None  # the checkpoint train.lua announced and may still be writing

    def forward(signum: int, _frame: Any) -> None:
        stopping.append(signum)
        if child.poll() is None:
            child.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    assert child.stdout is not None
    for line in iter(child.stdout.readline, b""):
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
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
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


def stop_low_disk(config: dict[str, Any], state: dict[str, Any], state_path: str, reason: str, tee: Tee) -> int:
    """Record why the run stopped (status.yml shows it) and exit with EXIT_LOW_DISK."""
    state["stopped"] = {"reason": f"low disk space: {reason}", "at": time.time()}
    host.write_json(state_path, state)
    tee.say(
        f"run {config['run']} stopped, low disk space: {reason}. Free space (or lower char_rnn_train_keep_checkpoints "
        f"or char_rnn_train_min_free_mb), then start {config.get('unit', 'the unit')} again: it resumes from the "
        "newest checkpoint"
    )
    return EXIT_LOW_DISK


def main(argv: list[str]) -> int:
    while True:
        code = start(argv)
        if not isinstance(code, str):
            return code
        # the speed watch stopped train.lua: start again, probe again, resume from the checkpoint


def start(argv: list[str]) -> int | str:
    if len(argv) != 2:
        print(f"usage: {argv[0]} RUN_CONFIG.json", file=sys.stderr)
        return 2
    config = load_json(argv[1])
    if config is None:
        print(f"{argv[1]}: no such run configuration", file=sys.stderr)
        return 2
    options = config["options"]
    tee = Tee(config["log_path"])
    chdir = config["char_rnn_dir"]
    data_dir = os.path.join(chdir, options["data_dir"])
    try:
        size = os.path.getsize(os.path.join(data_dir, "input.txt"))
        split = corpus.splits(
            size, int(options["batch_size"]), int(options["seq_length"]), options["train_frac"], options["val_frac"]
        )
    except (OSError, corpus.CorpusError) as exc:
        tee.say(f"cannot use the corpus in {data_dir}: {exc}")
        return 1
    ntrain = split["train_batches"]
    if ntrain < 1 or split["val_batches"] < 1:
        tee.say(f"{data_dir}/input.txt ({size} bytes) gives {split}: too small for this batch_size x seq_length")
        return 1
    checkpoint_dir = os.path.join(chdir, options["checkpoint_dir"])
    os.makedirs(checkpoint_dir, exist_ok=True)
    state_path = config["state_path"]
    state = load_json(state_path)
    entries = checkpoints.discover(checkpoint_dir, options["savefile"])["checkpoints"]
    now = time.time()
    decision = plan(config, state, entries, ntrain, now)
    for path in decision["invalid"]:
        tee.say(f"ignoring {path}: not a complete checkpoint")
    if decision.get("reason"):
        tee.say(decision["reason"])
    if decision["new_run"]:
        supersede(decision["supersede"], checkpoint_dir, tee)
        state = None
    if state is None:
        state = new_state(config, decision)

    keep = int(config.get("keep_checkpoints") or 0)
    prune(checkpoint_dir, options["savefile"], keep, tee)
    guard = DiskGuard(checkpoint_dir, int(config.get("min_free_mb") or 0))
    state.pop("stopped", None)

    if decision["action"] == "finished":
        add_segment(state, decision, now, tee.offset())
        host.write_json(state_path, state)
        tee.say(
            f"run {config['run']} already finished: {decision['offset_iterations']}/{decision['total_iterations']} "
            f"iterations (newest checkpoint {decision['checkpoint']}); not training"
        )
        return 0

    newest = checkpoints.latest_of(checkpoints.discover(checkpoint_dir, options["savefile"])["checkpoints"])
    guard.checkpoint_size = next_checkpoint_size(newest["size"] if newest else 0, int(options["eval_val_every"]))
    low = guard.short()
    if low is not None:
        return stop_low_disk(config, state, state_path, low, tee)

    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    setting = config.get("threads", "auto")
    previous = state.get("threads") or {}
    reference = None
    if (
        setting == "probe"
        and previous.get("setting") == "probe"
        and previous.get("th") == config["th"]
        and not previous.get("reprobe")
    ):
        threads, why, reference = previous["env"], "probed earlier in this run", previous.get("seconds_per_batch")
        probed_at = previous.get("probed_at", 0.0)
    elif setting == "probe":
        threads, why, reference = probe_threads(config, ntrain, host.usable_cpus(), tee)
        probed_at = time.time()
    else:
        (threads, why), probed_at = thread_environment(setting, config["th"], host.usable_cpus()), 0.0
    state["threads"] = {"setting": setting if isinstance(setting, str) else "configured", "th": config["th"],
                        "env": threads, "why": why, "seconds_per_batch": reference, "probed_at": probed_at}  # fmt: skip
    env = with_threads(env, threads)
    env.update({k: str(v) for k, v in (config.get("environment") or {}).items()})
    decision["threads"] = threads
    add_segment(state, decision, now, tee.offset())
    host.write_json(state_path, state)

    if decision["action"] == "resume":
        tee.say(
            f"resuming run {config['run']} from {decision['init_from']} at iteration "
            f"{decision['offset_iterations']}/{decision['total_iterations']} (epoch {decision['offset_epochs']:.3f}): "
            f"{decision['remaining_iterations']} iterations left, learning rate {decision['learning_rate']:.6g}"
        )
    else:
        tee.say(f"starting run {config['run']}: {decision['total_iterations']} iterations ({ntrain} per epoch)")
    tee.say("threads (" + why + "): " + " ".join(f"{k}={v}" for k, v in sorted(threads.items())))
    argv_th = [config["th"], "train.lua", *train_args(decision["options"])]
    stdbuf = shutil.which("stdbuf")
    if stdbuf:  # Torch's print goes through C stdio: block-buffered into a pipe without this
        argv_th = [stdbuf, "-oL", "-eL", *argv_th]
    watch = SpeedWatch(reference, probed_at + REPROBE_EVERY, WATCH_WINDOW) if reference else None

    def saved(path: str) -> None:
        prune(checkpoint_dir, options["savefile"], keep, tee, training=True)
        with contextlib.suppress(OSError):  # removed since: keep the previous estimate
            guard.checkpoint_size = next_checkpoint_size(os.path.getsize(path), int(options["eval_val_every"]))

    started = time.time()
    code = run_trainer(argv_th, env, chdir, tee, watch, guard, saved)
    if code != 0:  # stopped or crashed, perhaps while writing a checkpoint: that one is only in the way
        remove_cut_short(checkpoint_dir, options["savefile"], started, tee)
    if isinstance(code, LowDisk):
        return stop_low_disk(config, state, state_path, code.reason, tee)
    if isinstance(code, str):  # other work came or went: probe again and resume, in this same process
        state["threads"]["reprobe"] = code
        host.write_json(state_path, state)
        tee.log.close()
        return code
    if code is None:  # a clean stop: exit 0 so that systemd does not count it as a failure
        return 0
    if code == 0:
        state["finished"] = True
        host.write_json(state_path, state)
        tee.say(f"run {config['run']} finished")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
