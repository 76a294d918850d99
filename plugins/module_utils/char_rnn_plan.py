# Copyright: rnn_bootstrap maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a start of a char-rnn training run does: fresh, resume or finished, and train.lua's command line.

char-rnn's ``-init_from`` restores the weights but restarts the iteration counter at 1 and the
learning-rate schedule at its start, and names its checkpoints with the epoch *of that segment*.
The launcher's state file records, for every segment, when it started and how many iterations and
epochs came before it, so a checkpoint's absolute position is its segment's offset plus its own.
From it, ``plan`` gives train.lua the remaining epochs (``-max_epochs``), the learning rate decayed
as the uninterrupted run would have decayed it, and a ``-learning_rate_decay_after`` shifted by the
epochs already done.

Pure decisions (no I/O but reading the corpus size). Plain Python 3.8+ with no Ansible imports:
the char_rnn_train role copies it beside the launcher on the managed host.
"""

from __future__ import annotations

import math
import os
from typing import Any

if __name__.startswith("ansible_collections."):  # in the collection (the unit tests)
    from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils import checkpoints, corpus
else:  # a plain file beside the launcher on the managed host (char_rnn_train tasks/install.yml)
    import checkpoints
    import corpus

STATE_VERSION = 1
# The options that define the model and how the data is cut into batches: changing any of them
# makes the old checkpoints useless for -init_from (or changes what an iteration is).
MODEL_KEYS = ("data_dir", "model", "rnn_size", "num_layers", "seq_length", "batch_size", "train_frac", "val_frac")


class PlanError(Exception):
    """The run cannot start as configured (the corpus is missing or too small); the message says why."""


def model_key(options: dict[str, Any]) -> dict[str, Any]:
    return {key: options.get(key) for key in MODEL_KEYS}


def train_batches(char_rnn_dir: str, options: dict[str, Any]) -> int:
    """train.lua's batches per epoch for this corpus and batch_size x seq_length (corpus.py's split)."""
    data_dir = os.path.join(char_rnn_dir, options["data_dir"])
    try:
        size = os.path.getsize(os.path.join(data_dir, "input.txt"))
        split = corpus.splits(
            size, int(options["batch_size"]), int(options["seq_length"]), options["train_frac"], options["val_frac"]
        )
    except (OSError, corpus.CorpusError) as exc:
        raise PlanError(f"cannot use the corpus in {data_dir}: {exc}") from exc
    if split["train_batches"] < 1 or split["val_batches"] < 1:
        raise PlanError(
            f"{data_dir}/input.txt ({size} bytes) gives {split}: too small for this batch_size x seq_length"
        )
    return split["train_batches"]


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
    """Decide what this start does. Returns action fresh|resume|finished and train.lua's options.

    ``entries`` are the run's checkpoints as checkpoints.discover lists them: the newest valid one
    is resumed; a change of the model options (MODEL_KEYS) starts a new run and lists the old
    checkpoints under ``supersede``.
    """
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
        local = checkpoints.checkpoint_iteration(
            newest["epoch"], ntrain, int(options["eval_val_every"]), segment.get("total")
        )
        offset_iterations = min(int(segment["offset_iterations"]) + local, total)
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


def summary(run: str, decision: dict[str, Any]) -> str:
    """The line the launcher logs for a decision: already finished, resuming from where, or starting."""
    done = f"{decision['offset_iterations']}/{decision['total_iterations']}"
    if decision["action"] == "finished":
        return (
            f"run {run} already finished: {done} iterations (newest checkpoint {decision['checkpoint']}); not training"
        )
    if decision["action"] == "resume":
        return (
            f"resuming run {run} from {decision['init_from']} at iteration {done} "
            f"(epoch {decision['offset_epochs']:.3f}): {decision['remaining_iterations']} iterations left, "
            f"learning rate {decision['learning_rate']:.6g}"
        )
    return f"starting run {run}: {decision['total_iterations']} iterations ({decision['ntrain']} per epoch)"


def train_args(options: dict[str, Any]) -> list[str]:
    """train.lua's command-line options: ``-name value``, floats exact, booleans 1/0, None left out."""
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


def command_line(th: str, options: dict[str, Any], stdbuf: str | None = None) -> list[str]:
    """``th train.lua OPTIONS``, under ``stdbuf -oL -eL`` when there is one: Torch's print goes through
    C stdio, block-buffered into a pipe without it, and the launcher reads train.lua line by line."""
    argv = [th, "train.lua", *train_args(options)]
    return [stdbuf, "-oL", "-eL", *argv] if stdbuf else argv


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
    """Record this start in ``state``: the run's totals and, unless it is finished, a new segment."""
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
