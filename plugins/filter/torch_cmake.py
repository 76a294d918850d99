# Copyright: rnn_bootstrap maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter ``torch_cmake_refusal``: why a CMake cannot build torch/distro, by torch_install's own rule."""

from __future__ import annotations

from typing import Any

from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils.torch_probes import (
    cmake_refusal,
    parse_cmake_version,
)

DOCUMENTATION = r"""
name: torch_cmake_refusal
short_description: Why a CMake cannot build torch/distro (empty when it can)
version_added: "0.2.0"
description:
  - Reads the output of C(cmake --version) and says why M(rnn_bootstrap.char_rnn.torch_install) would refuse
    that CMake (CMake 4 or newer, or a version that cannot be read), or returns an empty string when it would
    build with it. The rule is the module's own (C(module_utils/torch_probes.py)), so the role and the module
    cannot disagree.
author:
  - rnn_bootstrap maintainers (@rnn-bootstrap)
options:
  _input:
    description: The output of C(cmake --version) (empty when it could not run).
    type: str
    required: true
"""

EXAMPLES = r"""
- name: Install a pinned CMake 3 where torch_install would refuse the system one
  ansible.builtin.debug:
    msg: "{{ cmake_version.stdout | rnn_bootstrap.char_rnn.torch_cmake_refusal }}"
  when: cmake_version.stdout | rnn_bootstrap.char_rnn.torch_cmake_refusal | length > 0
"""

RETURN = r"""
_value:
  description: "The reason, for example C(CMake 4.1.2: CMake 4 removed compatibility with ...), or an empty string."
  type: str
"""


def torch_cmake_refusal(version_output: str | None) -> str:
    return cmake_refusal(parse_cmake_version(version_output or "")) or ""


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"torch_cmake_refusal": torch_cmake_refusal}
