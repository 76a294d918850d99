# Copyright: rnn_bootstrap maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# The documentation of the action plugin plugins/action/loss_plot.py, which does all the work on the
# controller (this file is never run).

from __future__ import annotations

DOCUMENTATION = r"""
---
module: loss_plot
short_description: Draw char-rnn training and validation loss curves into a PNG on the controller
version_added: "0.2.0"
description:
  - Writes one PNG on the controller with, for every run given, its training loss (a light solid line) and its
    validation loss (a darker dashed line with a dot per checkpoint) against iteration, one colour per run. Give
    several runs to overlay them (a sweep's runs in one image).
  - A run's C(history) is what M(rnn_bootstrap.char_rnn.train_progress) returns as
    RV(rnn_bootstrap.char_rnn.train_progress#module:history) with
    O(rnn_bootstrap.char_rnn.train_progress#module:history=true).
  - Draws with matplotlib (its Agg backend, no display needed) when the controller's Python has it. Without
    matplotlib the task does not fail, it returns RV(plotted=false) and a RV(msg) saying how to install it.
  - Idempotent. The PNG records a SHA-256 of what it was drawn from (runs, title, size) in a C(tEXt) chunk; when
    O(dest) already holds a whole PNG with the same digest, nothing is drawn and the task is not changed (this
    needs no matplotlib).
  - Runs on the controller only (no connection to the host); parent directories of O(dest) are created.
author:
  - rnn_bootstrap maintainers (@rnn-bootstrap)
options:
  runs:
    description:
      - The runs to draw, in the order of the legend. A run with no points yet draws no curve.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: The run's label in the legend (for example C(host/run)).
        type: str
        required: true
      history:
        description:
          - The run's loss history, a dict with C(train) and C(val), lists of C([iteration, loss]) as
            M(rnn_bootstrap.char_rnn.train_progress) returns them in
            RV(rnn_bootstrap.char_rnn.train_progress#module:history).
          - The whole result of M(rnn_bootstrap.char_rnn.train_progress) is taken too (its C(history) is used).
        type: dict
        required: true
  dest:
    description: The PNG to write on the controller.
    type: path
    required: true
  title:
    description: The title above the plot.
    type: str
    default: char-rnn loss
  width:
    description: Width of the image in pixels.
    type: int
    default: 800
  height:
    description: Height of the image in pixels.
    type: int
    default: 500
extends_documentation_fragment:
  - rnn_bootstrap.char_rnn.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
notes:
  - matplotlib is an optional extra of this collection; the version tested is pinned in C(requirements-test.txt) and
    an execution environment built with C(meta/execution-environment.yml) gets it.
seealso:
  - module: rnn_bootstrap.char_rnn.train_progress
"""

EXAMPLES = r"""
- name: Read the run's loss history
  rnn_bootstrap.char_rnn.train_progress:
    path: /var/log/char-rnn/shakespeare.log
    history: true
  register: progress

- name: Draw it on the controller
  rnn_bootstrap.char_rnn.loss_plot:
    runs:
      - name: "{{ inventory_hostname }}/shakespeare"
        history: "{{ progress.history }}"
    dest: "plots/{{ inventory_hostname }}-shakespeare.png"
    title: shakespeare on {{ inventory_hostname }}
  register: plot

- name: Say when matplotlib is missing
  ansible.builtin.debug:
    msg: "{{ plot.msg }}"
  when: not plot.plotted

- name: Name each host's run for the overlay
  ansible.builtin.set_fact:
    loss_run:
      name: "{{ inventory_hostname }}/shakespeare"
      history: "{{ progress.history }}"

- name: Overlay every host's run in one image
  rnn_bootstrap.char_rnn.loss_plot:
    runs: "{{ ansible_play_hosts | map('extract', hostvars, 'loss_run') | list }}"
    dest: plots/all-hosts.png
    width: 1200
    height: 700
  run_once: true
"""

RETURN = r"""
plotted:
  description: Whether O(dest) holds the plot of these runs (drawn now, or already up to date).
  returned: always
  type: bool
  sample: true
dest:
  description: The PNG.
  returned: always
  type: str
  sample: plots/host1-shakespeare.png
curves:
  description: Number of curves in the plot (a training and a validation curve per run that has points).
  returned: always
  type: int
  sample: 2
colors:
  description: The colours of each run's curves, as C(#rrggbb), in the order of O(runs).
  returned: always
  type: list
  elements: dict
  sample: [{"name": "host1/shakespeare", "train": "#8fbbda", "val": "#1f77b4"}]
width:
  description: Width of the image in pixels.
  returned: always
  type: int
  sample: 800
height:
  description: Height of the image in pixels.
  returned: always
  type: int
  sample: 500
checksum:
  description: SHA-256 of what the plot is drawn from, as recorded in the PNG.
  returned: always
  type: str
  sample: 4f0c1e5d2a8b6f7e9c3d1a0b2c4e6f8a1b3d5c7e9f0a2b4c6d8e0f1a3b5c7d9e
msg:
  description: What happened; without matplotlib, how to install it.
  returned: always
  type: str
  sample: >-
    matplotlib is not installed for the controller's Python (/usr/bin/python3): no plot drawn (No module named
    'matplotlib'). Install it there, e.g. /usr/bin/python3 -m pip install 'matplotlib==3.11.2' (an optional extra
    of rnn_bootstrap.char_rnn: meta/ee-requirements.txt, requirements-test.txt)
"""
