# Copyright: rnn_bootstrap maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter ``sweep_placement``: which host runs which run of a sweep."""

from __future__ import annotations

from typing import Any

from ansible_collections.rnn_bootstrap.char_rnn.plugins.plugin_utils.sweep import sweep_placement

DOCUMENTATION = r"""
name: sweep_placement
short_description: Spread the runs of a char-rnn sweep over hosts
version_added: "0.1.0"
description:
  - Each host takes at most its limit of runs, C(runs_per_host) when set, otherwise
    floor(C(cpus) / C(cpus_per_run)), at least 1. Every char-rnn run configured on the host counts, the sweep's
    own and the others.
  - A run the host already has (its sweep manifest lists it) stays there. Each new run, in grid order, goes to
    the host with the lowest load (its runs / its limit) that has a free slot, the first by name on a tie. Hosts
    are taken sorted by name, so the same grid on the same hosts gives the same placement whatever the play's
    order.
  - Runs a host has that are no longer in the grid are left there and listed as stale; they keep their slot.
  - Fails when the new runs do not fit, with every host's limit and load.
author:
  - rnn_bootstrap maintainers (@rnn-bootstrap)
positional: hosts
options:
  _input:
    description: The runs, from P(rnn_bootstrap.char_rnn.sweep_runs#filter).
    type: list
    elements: dict
    required: true
  hosts:
    description: One dict per host with C(host), C(cpus), C(cpus_per_run), C(runs_per_host) (or null),
      C(others) (the number of char-rnn runs configured there outside this sweep) and C(sweep_runs) (this sweep's
      runs it has).
    type: list
    elements: dict
    required: true
"""

EXAMPLES = r"""
- name: Place the runs
  ansible.builtin.set_fact:
    placement: "{{ runs | rnn_bootstrap.char_rnn.sweep_placement(hosts) }}"
  vars:
    hosts:
      - {host: node1, cpus: 4, cpus_per_run: 1, runs_per_host: null, others: 0, sweep_runs: []}
      - {host: node2, cpus: 2, cpus_per_run: 1, runs_per_host: null, others: 1, sweep_runs: []}
"""

RETURN = r"""
_value:
  description:
    - C(hosts), per host C(limit), C(others), C(kept), C(new), C(stale) and C(runs) (the grid's runs it has, kept
      and new, in grid order); C(where), run to host; C(new) and C(kept), run names; C(stale), host to the runs
      no longer in the grid.
  type: dict
"""


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"sweep_placement": sweep_placement}
