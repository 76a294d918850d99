#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: corpus_check
short_description: Check that a file can be char-rnn's training corpus
version_added: "0.1.0"
description:
  - Reads O(path) in chunks and checks that it exists, is not empty, is text (no NUL or control
    bytes other than whitespace in its first 64 KiB), and is large enough that char-rnn's loader
    gives at least one training and one validation batch for O(batch_size) x O(seq_length).
  - With O(lua_flavour) a LuaJIT flavour, also refuses a corpus too big for char-rnn's loader in
    LuaJIT's 2 GB heap (checked from the size alone, before reading), and recommends C(LUA51).
  - Fails with the reason and the minimum size otherwise, so a training run never starts on a
    corpus that C(train.lua) would reject mid-run.
  - Read-only. Run it with C(delegate_to=localhost) to check a file on the controller before copying it.
author:
  - rnn_bootstrap maintainers (@rnn-bootstrap)
options:
  path:
    description: The corpus file (char-rnn reads C(<data_dir>/input.txt)).
    type: path
    required: true
  batch_size:
    description: C(train.lua -batch_size).
    type: int
    default: 50
  seq_length:
    description: C(train.lua -seq_length).
    type: int
    default: 50
  train_frac:
    description: C(train.lua -train_frac).
    type: float
    default: 0.95
  val_frac:
    description: C(train.lua -val_frac).
    type: float
    default: 0.05
  lua_flavour:
    description:
      - The Lua that Torch is built with (the torch7 role's C(torch7_lua_flavour)).
      - C(LUAJIT21) and C(LUAJIT20) limit the corpus size (see RV(maximum_size)); C(LUA51) and
        C(LUA52) do not. Omitted, no size limit is checked.
    type: str
    choices: [LUAJIT21, LUAJIT20, LUA51, LUA52]
extends_documentation_fragment:
  - rnn_bootstrap.char_rnn.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Check a corpus on the controller before deploying it
  rnn_bootstrap.char_rnn.corpus_check:
    path: files/corpus.txt
    batch_size: 50
    seq_length: 50
  delegate_to: localhost
  become: false
"""

RETURN = r"""
size:
  description: Size in bytes.
  returned: success
  type: int
  sample: 1115394
checksum:
  description: SHA-1 of the file, comparable with M(ansible.builtin.stat)'s C(checksum).
  returned: success
  type: str
  sample: 2bd7a3a2ef2b3a2c3c0c52ec1c7d7ad5d8f6d0a9
utf8:
  description: Whether the whole file decodes as UTF-8 (char-rnn itself works on bytes).
  returned: success
  type: bool
batches:
  description: Batches char-rnn's loader makes of it.
  returned: success
  type: int
  sample: 446
train_batches:
  description: Of those, for training.
  returned: success
  type: int
  sample: 423
val_batches:
  description: Of those, for validation.
  returned: success
  type: int
  sample: 23
minimum_size:
  description: Fewest bytes that give one training and one validation batch.
  returned: success
  type: int
  sample: 5000
maximum_size:
  description: Most bytes char-rnn's loader holds under O(lua_flavour); null without a limit.
  returned: success
  type: int
  sample: 12200000000
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils.corpus import CorpusError, check


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "batch_size": {"type": "int", "default": 50},
            "seq_length": {"type": "int", "default": 50},
            "train_frac": {"type": "float", "default": 0.95},
            "val_frac": {"type": "float", "default": 0.05},
            "lua_flavour": {"type": "str", "choices": ["LUAJIT21", "LUAJIT20", "LUA51", "LUA52"]},
        },
        supports_check_mode=True,
    )
    try:
        facts = check(**module.params)
    except CorpusError as exc:
        module.fail_json(msg=str(exc))
    facts.pop("binary_bytes", None)
    module.exit_json(changed=False, **facts)


if __name__ == "__main__":
    main()
