# Copyright: rnn_bootstrap maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter ``train_status``: one status line for a char-rnn training service.

Combines what the module train_progress parsed from the run's log (read from where the launcher's
last segment began), the launcher's state file (how many iterations and epochs the earlier
segments did: char-rnn's -init_from restarts its counter at 1) and systemd's view of the unit.
"""

from __future__ import annotations

import math
import os
from typing import Any

from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils.checkpoints import parse_name

DOCUMENTATION = r"""
name: train_status
short_description: One status line for a char-rnn training run
version_added: "0.1.0"
description:
  - Adds the offsets of the launcher's state to the last segment's figures from
    M(rnn_bootstrap.char_rnn.train_progress), so iteration, total and epoch are those of the whole run
    across restarts, and formats a line.
author:
  - rnn_bootstrap maintainers (@rnn-bootstrap)
positional: run, state, service
options:
  _input:
    description: The result of M(rnn_bootstrap.char_rnn.train_progress) on the run's log.
    type: dict
    required: true
  run:
    description: The run name.
    type: str
    required: true
  state:
    description: The launcher's state file (parsed JSON), or null.
    type: dict
  service:
    description: The C(status) of M(ansible.builtin.systemd_service) for the unit (ActiveState, SubState), or null.
    type: dict
"""

EXAMPLES = r"""
- name: Show the run's status
  ansible.builtin.debug:
    msg: "{{ (progress | rnn_bootstrap.char_rnn.train_status('default', state, unit.status)).line }}"
"""

RETURN = r"""
_value:
  description: The figures (run, service, iteration, total_iterations, epoch, max_epochs, train_loss, seconds_per_batch,
    val_loss, eta_seconds, restarts, finished, errors, stopped) and C(line), the formatted line. C(stopped) is why the
    launcher stopped the run (low disk space), or null.
  type: dict
"""


def _fmt(value: Any, spec: str, missing: str = "-") -> str:
    if value is None:
        return missing
    try:
        return format(value, spec)
    except (TypeError, ValueError):
        return str(value)


def duration(seconds: Any) -> str:
    if seconds is None:
        return "-"
    seconds = round(float(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours >= 24:
        return f"{hours // 24}d{hours % 24:02d}h{minutes:02d}m"
    return f"{hours}:{minutes:02d}:{secs:02d}"


def service_state(service: dict[str, Any] | None) -> str:
    if not service:
        return "unknown"
    active = service.get("ActiveState") or "unknown"
    sub = service.get("SubState")
    if active == "active" and sub == "exited":
        return "active (finished)"
    return f"{active} ({sub})" if sub else active


def resumed_val_loss(path: str) -> float | None:
    """The validation loss in the name of the checkpoint a segment resumed from (a finite one), or None."""
    parsed = parse_name(os.path.basename(path))
    return parsed["val_loss"] if parsed and math.isfinite(parsed["val_loss"]) else None


def train_status(
    progress: dict[str, Any] | None,
    run: str,
    state: dict[str, Any] | None = None,
    service: dict[str, Any] | None = None,
) -> dict[str, Any]:
    progress = progress or {}
    state = state or {}
    segments = state.get("segments") or []
    segment = segments[-1] if segments else {}
    offset_iterations = int(segment.get("offset_iterations") or 0)
    offset_epochs = float(segment.get("offset_epochs") or 0.0)
    total = state.get("total_iterations") or progress.get("total_iterations")
    local = progress.get("iteration")
    iteration = offset_iterations + local if local is not None else (offset_iterations if segments else None)
    epoch = offset_epochs + progress["epoch"] if progress.get("epoch") is not None else (offset_epochs or None)
    finished = bool(state.get("finished")) or bool(total and iteration is not None and iteration >= total)
    if finished and total:
        iteration = total
    spb = progress.get("seconds_per_batch")
    stopped = (state.get("stopped") or {}).get("reason")
    if finished:
        eta = 0
    elif stopped or None in (total, iteration, spb):  # a stopped run does not go on by itself
        eta = None
    else:
        eta = max(0, total - iteration) * spb
    max_epochs = state.get("max_epochs")
    val_loss = progress.get("val_loss")
    if val_loss is None and segment.get("init_from"):  # no checkpoint yet in this segment: the one it resumed
        val_loss = resumed_val_loss(segment["init_from"])
    figures = {
        "run": run,
        "service": service_state(service),
        "iteration": iteration,
        "total_iterations": total,
        "epoch": epoch,
        "max_epochs": max_epochs,
        "train_loss": progress.get("train_loss"),
        "seconds_per_batch": spb,
        "val_loss": val_loss,
        "eta_seconds": eta,
        "restarts": max(0, len(segments) - 1),
        "finished": finished,
        "errors": list(progress.get("errors") or []),
        "stopped": stopped,
    }
    epochs = _fmt(epoch, ".2f") + ("/" + _fmt(max_epochs, "g") if max_epochs is not None else "")
    line = (
        f"run {run} | {figures['service']} | iteration {_fmt(iteration, 'd')}/{_fmt(total, 'd')} | epoch {epochs} | "
        f"train loss {_fmt(figures['train_loss'], '.4f')} | {_fmt(spb, '.3f')} s/batch | "
        f"val loss {_fmt(figures['val_loss'], '.4f')} | ETA {duration(eta)} | restarts {figures['restarts']}"
    )
    if stopped:
        line += f" | stopped: {stopped}"
    if figures["errors"]:
        line += f" | error: {figures['errors'][-1]}"
    figures["line"] = line
    return figures


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"train_status": train_status}
