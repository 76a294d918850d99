# Copyright: rnn_bootstrap maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter ``sweep_runs``: the runs of a sweep grid, each with its name and options."""

from __future__ import annotations

from typing import Any

from ansible_collections.rnn_bootstrap.char_rnn.plugins.plugin_utils.sweep import sweep_runs

DOCUMENTATION = r"""
name: sweep_runs
short_description: The runs of a char-rnn sweep grid
version_added: "0.1.0"
description:
  - Expands a grid (a dict of train.lua option to a list of values) into every combination, in a fixed order
    (the options in the order C(model), C(rnn_size), C(num_layers), C(dropout), C(learning_rate), C(seq_length),
    C(batch_size), C(learning_rate_decay), C(learning_rate_decay_after), C(decay_rate), C(grad_clip),
    C(max_epochs), C(seed), the first varying slowest; the values in the order given).
  - Each run is named C(sweep-<sweep>-rs<rnn_size>-nl<num_layers>-do<dropout>-lr<learning_rate>), followed by
    every other option whose value differs from the base (C(gru), C(sl100), C(bs25), ...). The name depends on
    the run's options only, not on the grid's shape, so a grid that grows keeps the names of the runs it had.
    A name longer than 64 characters is cut and ends with a hash of the whole name.
  - Fails, naming the option and what is allowed, for a grid that is not a dict, is empty, has an unknown
    option, a value that is not a list, an empty list, a value of the wrong type or range, or a value twice.
author:
  - rnn_bootstrap maintainers (@rnn-bootstrap)
positional: sweep, base, paths
options:
  _input:
    description: The grid, C(char_rnn_sweep_grid).
    type: dict
    required: true
  sweep:
    description: The sweep's name, C(char_rnn_sweep_name).
    type: str
    required: true
  base:
    description: The value of every option the grid may sweep when it does not (from the C(char_rnn_train_*)
      variables).
    type: dict
    required: true
  paths:
    description: C(log_dir), C(state_dir) and C(char_rnn_dir) of the C(char_rnn_train) role; each run then gets
      C(log_path), C(state_path) and C(checkpoint_path) (C(<char_rnn_dir>/cv/<run>)).
    type: dict
"""

EXAMPLES = r"""
- name: The runs of the grid
  ansible.builtin.debug:
    msg: "{{ {'rnn_size': [128, 256], 'dropout': [0, 0.25]} | rnn_bootstrap.char_rnn.sweep_runs('tiny', base) }}"
  vars:
    base: {model: lstm, rnn_size: 128, num_layers: 2, dropout: 0, learning_rate: 0.002, seq_length: 50,
           batch_size: 50, learning_rate_decay: 0.97, learning_rate_decay_after: 10, decay_rate: 0.95,
           grad_clip: 5, max_epochs: 50, seed: 123}
"""

RETURN = r"""
_value:
  description: One dict per run, in grid order, with C(run) (its name, e.g. C(sweep-tiny-rs128-nl2-do0.25-lr0.002)),
    C(options) (every option above, with the grid's values), C(varied) (the grid's options and their values) and,
    with O(paths), C(log_path), C(state_path) and C(checkpoint_path).
  type: list
  elements: dict
"""


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"sweep_runs": sweep_runs}
