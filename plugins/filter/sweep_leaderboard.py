# Copyright: rnn_bootstrap maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter ``sweep_leaderboard``: every run of a sweep, from every host, in one table sorted by best val loss."""

from __future__ import annotations

from typing import Any

from ansible_collections.rnn_bootstrap.char_rnn.plugins.filter.train_status import train_status
from ansible_collections.rnn_bootstrap.char_rnn.plugins.plugin_utils.sweep import sweep_leaderboard

DOCUMENTATION = r"""
name: sweep_leaderboard
short_description: The leaderboard of a char-rnn sweep
version_added: "0.1.0"
description:
  - Turns what C(playbooks/leaderboard.yml) gathered on each host (the sweep's manifest and, per run in its
    order, the slurped launcher state, the result of M(rnn_bootstrap.char_rnn.train_progress), of
    M(ansible.builtin.systemd_service) and of M(rnn_bootstrap.char_rnn.checkpoint_info)) into rows.
  - Iteration, epoch, train loss and s/batch are the whole run's, across restarts, as
    P(rnn_bootstrap.char_rnn.train_status#filter) computes them; the best val loss is that of the best valid
    checkpoint.
  - Rows are sorted by best val loss (runs without a checkpoint last), then host and run.
author:
  - rnn_bootstrap maintainers (@rnn-bootstrap)
options:
  _input:
    description: One dict per host with C(host), C(manifest) (the parsed sweep manifest), and the register
      C(results) lists C(states), C(progress), C(services) and C(checkpoints).
    type: list
    elements: dict
    required: true
"""

EXAMPLES = r"""
- name: Build the leaderboard
  ansible.builtin.set_fact:
    leaderboard: >-
      {{ ansible_play_hosts | map('extract', hostvars, 'bundle') | rnn_bootstrap.char_rnn.sweep_leaderboard }}
"""

RETURN = r"""
_value:
  description:
    - C(rows), one dict per run, best first, with C(rank), C(host), C(run), C(options) (the swept options as
      text), C(varied), C(all_options), C(iteration), C(total_iterations), C(epoch), C(max_epochs),
      C(train_loss), C(best_val_loss), C(best_checkpoint), C(last_val_loss), C(seconds_per_batch), C(state)
      (the unit's state, or C(removed)), C(finished), C(errors), C(stopped), C(status_line) and C(progress)
      (the run's M(rnn_bootstrap.char_rnn.train_progress) result).
    - C(table), the printed lines; C(csv), the CSV text; C(winner), the first row with a checkpoint, or null.
  type: dict
"""


def leaderboard(bundles: list[dict[str, Any]]) -> dict[str, Any]:
    return sweep_leaderboard(bundles, train_status)


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"sweep_leaderboard": leaderboard}
