#!/usr/bin/python
# Copyright: rnn_bootstrap maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: checkpoint_info
short_description: Find char-rnn checkpoints and pick the latest and the best
version_added: "0.1.0"
description:
  - Lists every C(lm_*.t7) file in a char-rnn checkpoint directory (C(-checkpoint_dir), C(cv/) by default).
  - Parses savefile, epoch and validation loss from the name C(lm_<savefile>_epoch<epoch %.2f>_<val_loss %.4f>.t7)
    (the savefile may itself contain underscores) and reports size and modification time.
  - Names do not sort by recency (C(epoch10...) sorts before C(epoch9...)), so RV(latest) is chosen by modification
    time, then by iteration (when the file was read), then by epoch; RV(best) is the lowest validation loss.
  - Every file gets a cheap structural check of its torch7 binary serialization (the object tree is walked, data
    blocks are seeked over, every length is checked against the file size). Files that are empty or cut short,
    for example by a training run killed while C(torch.save) was writing, are reported as invalid and are never
    chosen as RV(latest) or RV(best).
  - Where the Python package C(torchfile) is importable on the target, it also reads iteration, epoch,
    validation losses and the training options from the file itself; a load failure marks the file invalid with
    the error. See O(read_contents).
  - Read-only; never changes anything, so it is safe in check mode.
author:
  - rnn_bootstrap maintainers (@rnn-bootstrap)
options:
  dir:
    description:
      - The checkpoint directory, for example C(/opt/char-rnn/cv).
    type: path
    required: true
    aliases: [path, checkpoint_dir]
  savefile:
    description:
      - Only report checkpoints of this C(-savefile) (the part between C(lm_) and C(_epoch)).
      - Files whose name does not follow the char-rnn pattern are then left out.
    type: str
  read_contents:
    description:
      - Whether to load each checkpoint with the C(torchfile) Python package to report iteration, epoch, val_losses
        and opt from the file itself.
      - V(auto) loads when C(torchfile) can be imported and quietly skips it otherwise.
      - V(always) fails when C(torchfile) is missing.
      - V(never) only checks the structure; use it for many or big checkpoints, since C(torchfile) holds a whole
        checkpoint, weights included, in memory while reading it.
    type: str
    choices: [auto, always, never]
    default: auto
  missing_ok:
    description:
      - What to do when O(dir) does not exist (for example before the first training run).
      - V(false) fails with a message naming the directory.
      - V(true) returns an empty list, RV(exists=false), and null RV(latest) and RV(best).
    type: bool
    default: false
extends_documentation_fragment:
  - rnn_bootstrap.char_rnn.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
notes:
  - The structural check needs nothing but Python; C(torchfile) (which needs numpy) is optional.
  - A file whose name is C(lm_*.t7) but does not follow the pattern is listed with null savefile, epoch and
    val_loss.
"""

EXAMPLES = r"""
- name: Find the checkpoints of the tinyshakespeare run
  rnn_bootstrap.char_rnn.checkpoint_info:
    dir: /opt/char-rnn/cv
    savefile: lstm
  register: ckpt

- name: Resume training from the newest complete checkpoint
  ansible.builtin.debug:
    msg: "th train.lua -init_from {{ ckpt.latest.path }}"
  when: ckpt.latest is not none

- name: Sample from the best one
  ansible.builtin.command:
    cmd: th sample.lua {{ ckpt.best.path }} -gpuid -1 -length 500
    chdir: /opt/char-rnn
  when: ckpt.best is not none
  changed_when: false

- name: Quick look before the first run, without loading weights
  rnn_bootstrap.char_rnn.checkpoint_info:
    dir: /opt/char-rnn/cv
    read_contents: never
    missing_ok: true
  register: ckpt
"""

RETURN = r"""
exists:
  description: Whether O(dir) exists.
  returned: always
  type: bool
  sample: true
dir:
  description: The directory that was searched.
  returned: always
  type: str
  sample: /opt/char-rnn/cv
torchfile:
  description: Whether the C(torchfile) package was used to read the files.
  returned: always
  type: bool
  sample: true
count:
  description: Number of checkpoints listed (valid or not).
  returned: always
  type: int
  sample: 3
valid_count:
  description: Number of valid checkpoints.
  returned: always
  type: int
  sample: 3
invalid:
  description: Paths of the checkpoints that are empty, cut short or could not be loaded.
  returned: always
  type: list
  elements: str
  sample: [/opt/char-rnn/cv/lm_lstm_epoch3.00_1.4411.t7]
latest:
  description: The newest valid checkpoint (same keys as an element of RV(checkpoints)), or null.
  returned: always
  type: dict
  sample: {path: /opt/char-rnn/cv/lm_lstm_epoch10.00_1.3921.t7, epoch: 10.0, val_loss: 1.3921}
best:
  description: The valid checkpoint with the lowest validation loss (the newer one on a tie), or null.
  returned: always
  type: dict
  sample: {path: /opt/char-rnn/cv/lm_lstm_epoch9.00_1.3870.t7, epoch: 9.0, val_loss: 1.387}
checkpoints:
  description: Every C(lm_*.t7) file, sorted by name.
  returned: always
  type: list
  elements: dict
  contains:
    path:
      description: Full path.
      type: str
    name:
      description: File name.
      type: str
    savefile:
      description: The savefile part of the name, null if the name does not follow the pattern.
      type: str
    epoch:
      description: Epoch from the name (two decimals).
      type: float
    val_loss:
      description: Validation loss from the name (four decimals).
      type: float
    size:
      description: Size in bytes.
      type: int
    mtime:
      description: Modification time, seconds since the epoch.
      type: float
    valid:
      description: Whether the file is a complete torch7 serialization (and loaded, when read).
      type: bool
    invalid_reason:
      description: Why the file is invalid, for example C(empty file) or C(file ends at byte 4096, cut short ...).
      type: str
    read:
      description: Whether the contents were read with C(torchfile); the keys below are only present when true.
      type: bool
    iteration:
      description: The iteration the checkpoint was saved at (C(checkpoint.i)).
      type: int
    file_epoch:
      description: The exact epoch stored in the file.
      type: float
    file_val_loss:
      description: The exact validation loss stored in the file.
      type: float
    val_losses:
      description: Validation loss by iteration (keys are iterations; strings once serialized to JSON).
      type: dict
    opt:
      description: The scalar training options stored in the checkpoint (model, rnn_size, num_layers, seq_length,
        batch_size, learning_rate, dropout, max_epochs, savefile, init_from, ...), decoded to text.
      type: dict
    vocab_size:
      description: Number of characters in the checkpoint's vocabulary.
      type: int
  sample:
    - path: /opt/char-rnn/cv/lm_lstm_epoch1.00_3.1838.t7
      name: lm_lstm_epoch1.00_3.1838.t7
      savefile: lstm
      epoch: 1.0
      val_loss: 3.1838
      size: 200750
      mtime: 1795927553.87
      valid: true
      invalid_reason: null
      read: true
      iteration: 142
      opt: {model: gru, rnn_size: 16, num_layers: 2}
"""

import os
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils.checkpoints import discover

try:
    import torchfile  # optional on targets: it needs numpy
except Exception:  # ImportError, or numpy failing to import underneath it
    torchfile = None


def argument_spec() -> dict[str, Any]:
    return {
        "dir": {"type": "path", "required": True, "aliases": ["path", "checkpoint_dir"]},
        "savefile": {"type": "str"},
        "read_contents": {"type": "str", "choices": ["auto", "always", "never"], "default": "auto"},
        "missing_ok": {"type": "bool", "default": False},
    }


def empty_result(directory: str) -> dict[str, Any]:
    return {
        "changed": False,
        "exists": False,
        "dir": directory,
        "torchfile": False,
        "checkpoints": [],
        "latest": None,
        "best": None,
        "count": 0,
        "valid_count": 0,
        "invalid": [],
    }


def choose_reader(mode: str) -> Any:
    """The torchfile module to read with, or None; raises when mode=always and it is missing."""
    if mode == "never":
        return None
    if torchfile is None and mode == "always":
        raise RuntimeError(
            "read_contents=always needs the Python package torchfile (and numpy) on the target; "
            "install it (pip install torchfile) or use read_contents=auto/never"
        )
    return torchfile


def run(module: AnsibleModule) -> dict[str, Any]:
    directory = module.params["dir"]
    if not os.path.exists(directory):
        if module.params["missing_ok"]:
            return empty_result(directory)
        module.fail_json(msg=f"checkpoint dir {directory} does not exist", **empty_result(directory))
    if not os.path.isdir(directory):
        module.fail_json(msg=f"checkpoint dir {directory} is not a directory", **empty_result(directory))
    try:
        reader = choose_reader(module.params["read_contents"])
    except RuntimeError as exc:
        module.fail_json(msg=str(exc), **empty_result(directory))
    result = discover(directory, module.params["savefile"], reader)
    result.update(changed=False, exists=True, dir=directory, torchfile=reader is not None)
    return result


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    module.exit_json(**run(module))


if __name__ == "__main__":
    main()
