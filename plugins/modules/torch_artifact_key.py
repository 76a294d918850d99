#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: torch_artifact_key
short_description: Compute which prebuilt Torch7 prefix artifact fits this host
version_added: "0.2.0"
description:
  - Computes the key of the Torch7 prefix that M(rnn_bootstrap.char_rnn.torch_install) would build on this
    host, from everything that makes two prefixes incompatible - the distribution and its major release, the
    glibc version, the CPU architecture, the torch/distro commit, the install prefix (Torch7 prefixes are not
    relocatable), the Lua flavour, the packages built, CUDA
    (and the C(nvcc) version), and the BLAS that O(blas_soname) resolves to with its threading model.
  - Hosts with equal keys can share one artifact; the artifact's name is derived from the key, so they look up
    the same file in a store.
  - Reads only; changes nothing.
author:
  - rnn_bootstrap maintainers (@rnn-bootstrap)
options:
  commit:
    description:
      - The torch/distro commit to build, a full 40-character SHA.
    type: str
    required: true
  lua_flavour:
    description:
      - The Lua implementation, as for M(rnn_bootstrap.char_rnn.torch_install).
    type: str
    default: LUAJIT21
    choices: [LUAJIT21, LUAJIT20, LUA51, LUA52]
  cuda:
    description:
      - Whether the CUDA rocks are built.
    type: bool
    default: false
  extra_packages:
    description:
      - Upstream packages built on top of the char-rnn set, as for M(rnn_bootstrap.char_rnn.torch_install).
    type: list
    elements: str
    default: []
  blas_soname:
    description:
      - The BLAS library libTH links against. Its threading model (OpenMP or not) is read from what it links.
    type: str
    default: libopenblas.so.0
  prefix:
    description:
      - The install prefix, part of the key; its build record tells which key (if any) is installed now.
    type: path
    default: /opt/torch/install
extends_documentation_fragment:
  - rnn_bootstrap.char_rnn.attributes
attributes:
  check_mode:
    support: full
    details: Reads only.
  diff_mode:
    support: none
notes:
  - Fails when O(blas_soname) does not resolve - install the BLAS runtime first (role
    P(rnn_bootstrap.char_rnn.system_deps#role)).
"""

EXAMPLES = r"""
- name: Which Torch7 artifact fits this host
  rnn_bootstrap.char_rnn.torch_artifact_key:
    commit: 0219027e6c4644a0ba5c5bf137c989a0a8c9e01b
    extra_packages: [lua-cjson]
  register: torch_key

- name: Show it
  ansible.builtin.debug:
    msg: "{{ torch_key.name }} (installed now: {{ torch_key.installed_key_id or 'none' }})"
"""

RETURN = r"""
key:
  description: The key's fields.
  returned: success
  type: dict
  sample:
    distribution: debian
    release: "12"
    glibc: "2.36"
    arch: x86_64
    commit: 0219027e6c4644a0ba5c5bf137c989a0a8c9e01b
    prefix: /opt/torch/install
    lua_flavour: LUAJIT21
    packages: [luafilesystem, penlight, lua-cjson, luaffi, cwrap, paths, torch, trepl, sys, xlua, moses, nn, graph,
      nngraph, optim]
    cuda: false
    cuda_version: null
    blas: "libopenblas.so.0:openmp"
key_id:
  description: A short hash of every field of the key.
  returned: success
  type: str
  sample: 3f2a9c1b77d0
name:
  description: The artifact's name (without C(.tar.gz) / C(.json)).
  returned: success
  type: str
  sample: torch7-debian12-x86_64-luajit21-0219027e6c46-cpu-3f2a9c1b77d0
installed_key_id:
  description: The key id recorded in O(prefix)'s build record, or null.
  returned: success
  type: str
"""

import re

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils import torch_artifact as ta
from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils.torch_catalog import LUA_FLAVOURS, packages_for
from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils.torch_probes import nvcc_version
from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils.torch_records import read_state, state_path
from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils.torch_runner import Runner, TorchError

ARGUMENT_SPEC = dict(
    commit=dict(type="str", required=True),
    lua_flavour=dict(type="str", default="LUAJIT21", choices=list(LUA_FLAVOURS)),
    cuda=dict(type="bool", default=False),
    extra_packages=dict(type="list", elements="str", default=[]),
    blas_soname=dict(type="str", default="libopenblas.so.0"),
    prefix=dict(type="path", default="/opt/torch/install"),
)


def compute(params, runner):
    """(ok, result): the key of this host for ``params``."""
    if not re.match(r"^[0-9a-f]{40}$", params["commit"]):
        return False, {"msg": "commit must be a full 40-character SHA, not '{}'".format(params["commit"])}
    try:
        packages = packages_for(params["extra_packages"], params["cuda"])
        cuda = nvcc_version(runner) if params["cuda"] else None
    except TorchError as exc:
        return False, {"msg": exc.msg}
    blas = ta.blas_identity(runner, params["blas_soname"])
    if blas is None:
        return False, {
            "msg": "the dynamic linker does not know {} (ldconfig -p): install the BLAS runtime first "
            "(role rnn_bootstrap.char_rnn.system_deps) or set blas_soname".format(params["blas_soname"])
        }
    distribution, release = ta.read_os_release()
    key = ta.make_key(
        distribution,
        release,
        ta.glibc_version(),
        ta.machine(),
        params["commit"],
        params["prefix"],
        params["lua_flavour"],
        packages,
        params["cuda"],
        cuda,
        blas,
    )
    record = read_state(state_path(params["prefix"])) or {}
    return True, {
        "changed": False,
        "key": key,
        "key_id": ta.key_id(key),
        "name": ta.artifact_name(key),
        "installed_key_id": None if record.get("incomplete") else record.get("artifact_key_id"),
    }


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    ok, result = compute(module.params, Runner(module))
    if ok:
        module.exit_json(**result)
    module.fail_json(**result)


if __name__ == "__main__":
    main()
