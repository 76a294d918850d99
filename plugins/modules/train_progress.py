#!/usr/bin/python
# Copyright: rnn_bootstrap maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: train_progress
short_description: Report how far a char-rnn training run has got, from its log
version_added: "0.1.0"
description:
  - Reads what C(th train.lua) printed (a log file on the target) and summarizes the run
    (iteration, total iterations, epoch, latest training loss, seconds per batch, last validation loss,
    last checkpoint, estimated time left) plus errors such as a Lua traceback.
  - Understands the progress lines C(N/TOTAL (epoch E), train_loss = L, grad/param norm = G, time/batch = Ts),
    C(evaluating loss over split index 2), C(saving checkpoint to cv/lm_..._epochE_V.t7) and the header lines
    (data batches, vocab size, C(creating an lstm with 2 layers), number of parameters, C(loading a model from
    checkpoint ...)).
  - char-rnn's C(-init_from) restarts the iteration counter, so a log appended to by several runs is split into
    segments (a new C(loading data files...) or C(creating an ...) header after a run has started begins one);
    the figures are those of the last segment and RV(restarts) counts the earlier ones.
  - Read-only; safe in check mode.
author:
  - rnn_bootstrap maintainers (@rnn-bootstrap)
options:
  path:
    description:
      - The training log, for example the file a systemd unit's C(StandardOutput=append:) writes.
    type: path
    required: true
  tail_bytes:
    description:
      - Only read the last this many bytes of the log; V(0) reads it whole.
      - A progress line is about 110 bytes, so C(1048576) still covers thousands of iterations. Header figures
        (model, vocab size, ...) and the segment count only cover what was read; RV(truncated) says whether
        the log was cut.
    type: int
    default: 0
  median_of:
    description:
      - RV(seconds_per_batch) is the median C(time/batch) of this many last progress lines.
    type: int
    default: 10
  missing_ok:
    description:
      - With V(false), a missing log fails the task; with V(true) it returns RV(exists=false) and null figures.
    type: bool
    default: false
  history:
    description:
      - Also return RV(history), the run's training and validation loss against iteration, for plotting
        (M(rnn_bootstrap.char_rnn.loss_plot)).
    type: bool
    default: false
    version_added: "0.2.0"
  history_points:
    description:
      - With O(history=true), each series of RV(history) keeps at most this many points, evenly spread over the
        run (the first and the last kept).
    type: int
    default: 500
    version_added: "0.2.0"
extends_documentation_fragment:
  - rnn_bootstrap.char_rnn.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
notes:
  - The time per batch printed by char-rnn leaves out validation, so RV(eta_seconds) is a lower bound.
"""

EXAMPLES = r"""
- name: How far is training?
  rnn_bootstrap.char_rnn.train_progress:
    path: /var/log/char-rnn/train.log
    tail_bytes: 1048576
  register: progress

- name: Show it
  ansible.builtin.debug:
    msg: >-
      {{ progress.iteration }}/{{ progress.total_iterations }} (epoch {{ progress.epoch }}),
      train loss {{ progress.train_loss }}, val loss {{ progress.val_loss }},
      about {{ (progress.eta_seconds / 60) | round(1) }} min left

- name: Wait until the run has finished
  rnn_bootstrap.char_rnn.train_progress:
    path: /var/log/char-rnn/train.log
  register: progress
  until: progress.finished or progress.errors | length > 0
  retries: 120
  delay: 30
"""

RETURN = r"""
exists:
  description: Whether the log exists.
  returned: always
  type: bool
  sample: true
log_path:
  description: The log that was read.
  returned: always
  type: str
  sample: /var/log/char-rnn/train.log
size:
  description: Size of the log in bytes.
  returned: always
  type: int
  sample: 7050
truncated:
  description: Whether only the tail of the log was read (see O(tail_bytes)).
  returned: always
  type: bool
  sample: false
segments:
  description: Number of runs found in the log.
  returned: always
  type: int
  sample: 1
restarts:
  description: Number of runs before the last one (RV(segments) - 1).
  returned: always
  type: int
  sample: 0
started:
  description: Whether the last run has printed a progress line or saved a checkpoint.
  returned: always
  type: bool
  sample: true
iteration:
  description:
    - Current iteration of the last run. When a checkpoint was saved after the last progress line (the final
      one always is), its iteration is worked out as its epoch times the train batches per epoch.
  returned: always
  type: int
  sample: 284
total_iterations:
  description: Iterations the run will do (max_epochs x train batches).
  returned: always
  type: int
  sample: 284
epoch:
  description: Current epoch (fractional).
  returned: always
  type: float
  sample: 2.0
finished:
  description: Whether the last run reached its total iterations.
  returned: always
  type: bool
  sample: true
evaluating:
  description: Whether the log ends inside a validation pass.
  returned: always
  type: bool
  sample: false
train_loss:
  description: Latest training loss.
  returned: always
  type: float
  sample: 3.2454087
grad_param_norm:
  description: Latest grad/param norm.
  returned: always
  type: float
  sample: 0.29477
seconds_per_batch:
  description: Median time/batch of the last O(median_of) progress lines.
  returned: always
  type: float
  sample: 0.0035
eta_seconds:
  description: (total_iterations - iteration) x seconds_per_batch; null until known.
  returned: always
  type: float
  sample: 0.0
val_loss:
  description: Validation loss of the last checkpoint saved (from its name).
  returned: always
  type: float
  sample: 3.1596
last_checkpoint:
  description: The last checkpoint saved, as printed (relative to train.lua's working directory).
  returned: always
  type: str
  sample: cv/lm_tiny_epoch2.00_3.1596.t7
checkpoints_saved:
  description: Every checkpoint the last run saved, in order.
  returned: always
  type: list
  elements: str
progress_lines:
  description: Number of progress lines of the last run that were read.
  returned: always
  type: int
  sample: 56
errors:
  description: Error lines of the last run (a Lua error before C(stack traceback:), C(read error ...),
    C(loss is exploding, aborting.), out of memory, ...).
  returned: always
  type: list
  elements: str
  sample: ["/root/torch/install/bin/luajit: train.lua:273: out of memory"]
model:
  description: C(lstm), C(gru) or C(rnn), from the header.
  returned: always
  type: str
  sample: lstm
num_layers:
  description: Layers, from the header.
  returned: always
  type: int
  sample: 2
rnn_size:
  description: Hidden size; only printed when resuming (C(overwriting rnn_size=...)).
  returned: always
  type: int
  sample: 128
vocab_size:
  description: Vocabulary size, from the header.
  returned: always
  type: int
  sample: 58
num_parameters:
  description: Number of parameters in the model, from the header.
  returned: always
  type: int
  sample: 5850
train_batches:
  description: Train batches per epoch, from the header.
  returned: always
  type: int
  sample: 142
val_batches:
  description: Validation batches, from the header.
  returned: always
  type: int
  sample: 8
test_batches:
  description: Test batches, from the header.
  returned: always
  type: int
  sample: 0
init_from:
  description: The checkpoint the last run resumed from, if any.
  returned: always
  type: str
  sample: cv/lm_tiny_epoch1.06_3.2739.t7
history:
  description:
    - The loss history of the run the log ends with, across C(-init_from) resumes found in what was read (a
      resumed segment continues at the iteration of the checkpoint it loaded; the iterations lost after that
      checkpoint are left out). What M(rnn_bootstrap.char_rnn.loss_plot) takes as a run's C(history).
    - Iterations are counted from the first segment read; with O(tail_bytes) that may be later than the run's
      start.
  returned: when O(history=true)
  type: dict
  version_added: "0.2.0"
  contains:
    train:
      description: C([iteration, train_loss]) of the progress lines, downsampled to O(history_points).
      type: list
      elements: list
      sample: [[5, 3.95151269], [10, 3.51782461]]
    val:
      description: C([iteration, val_loss]) of the checkpoints saved, downsampled to O(history_points).
      type: list
      elements: list
      sample: [[50, 3.3196], [100, 3.3046]]
    train_points:
      description: Progress lines in the history before downsampling.
      type: int
      sample: 56
    val_points:
      description: Checkpoints in the history before downsampling.
      type: int
      sample: 6
    segments:
      description: Segments (train.lua runs) the history was stitched from.
      type: int
      sample: 1
"""

import os
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils.char_rnn_log import (
    LogParser,
    loss_history,
    parser_for_text,
    read_tail,
)


def argument_spec() -> dict[str, Any]:
    return {
        "path": {"type": "path", "required": True},
        "tail_bytes": {"type": "int", "default": 0},
        "median_of": {"type": "int", "default": 10},
        "missing_ok": {"type": "bool", "default": False},
        "history": {"type": "bool", "default": False},
        "history_points": {"type": "int", "default": 500},
    }


def empty_result(path: str, history_points: int | None = None) -> dict[str, Any]:
    parser = LogParser()
    result = parser.summary()
    result.update(changed=False, exists=False, log_path=path, size=0, truncated=False)
    if history_points is not None:
        result["history"] = loss_history(parser, history_points)
    return result


def run(module: AnsibleModule) -> dict[str, Any]:
    path = module.params["path"]
    if module.params["tail_bytes"] < 0:
        module.fail_json(msg="tail_bytes must be 0 (whole file) or positive")
    if module.params["median_of"] < 1:
        module.fail_json(msg="median_of must be at least 1")
    points = module.params["history_points"] if module.params["history"] else None
    if points is not None and points < 2:
        module.fail_json(msg=f"history_points must be at least 2 (a curve needs two points), not {points}")
    if not os.path.exists(path):
        if module.params["missing_ok"]:
            return empty_result(path, points)
        module.fail_json(msg=f"training log {path} does not exist", **empty_result(path, points))
    try:
        text, truncated, size = read_tail(path, module.params["tail_bytes"])
    except OSError as exc:
        module.fail_json(msg=f"cannot read training log {path}: {exc}", **empty_result(path, points))
    parser = parser_for_text(text, module.params["median_of"], partial_first_line=truncated)
    result = parser.summary()
    if points is not None:
        result["history"] = loss_history(parser, points)
    result.update(changed=False, exists=True, log_path=path, size=size, truncated=truncated)
    return result


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    module.exit_json(**run(module))


if __name__ == "__main__":
    main()
