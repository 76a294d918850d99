# Copyright: rnn_bootstrap maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter ``unpinned_rocks``: the rocks of the luarocks role that would install whatever version the servers offer."""

from __future__ import annotations

from typing import Any

DOCUMENTATION = r"""
name: unpinned_rocks
short_description: The rocks that are not pinned to a version
version_added: "0.1.0"
description:
  - Lists, for the role C(rnn_bootstrap.char_rnn.luarocks), the items of C(luarocks_extra_rocks) that would install
    whatever version the rock servers offer that day (a bare name, a dict with neither C(version) nor C(rockspec), or
    C(state=latest)), and the rocks of C(luarocks_rocks) when C(luarocks_rocks_state) is V(latest).
  - Removals (C(state=absent)) and local rockspecs count as pinned.
author:
  - rnn_bootstrap maintainers (@rnn-bootstrap)
positional: rocks, rocks_state
options:
  _input:
    description: C(luarocks_extra_rocks).
    type: list
    elements: raw
    required: true
  rocks:
    description: C(luarocks_rocks).
    type: list
    elements: str
  rocks_state:
    description: C(luarocks_rocks_state).
    type: str
    default: present
"""

EXAMPLES = r"""
- name: Refuse unpinned rocks
  ansible.builtin.assert:
    that: >-
      luarocks_extra_rocks | rnn_bootstrap.char_rnn.unpinned_rocks(luarocks_rocks, luarocks_rocks_state)
      | length == 0
"""

RETURN = r"""
_value:
  description:
    - One line per unpinned rock, its name and why, for example C(lua-cjson (luarocks_extra_rocks, no version)).
  type: list
  elements: str
"""


def unpinned_rocks(
    extra_rocks: list[Any] | None, rocks: list[str] | None = None, rocks_state: str = "present"
) -> list[str]:
    found = []
    for rock in extra_rocks or []:
        if isinstance(rock, str):
            found.append(f"{rock} (luarocks_extra_rocks, no version)")
            continue
        if not isinstance(rock, dict):
            found.append(f"{rock!r} (luarocks_extra_rocks, neither a name nor a dict)")
            continue
        name = rock.get("name") or rock.get("rockspec") or "?"
        state = rock.get("state") or "present"
        if state == "latest":
            found.append(f"{name} (luarocks_extra_rocks, state latest)")
        elif state != "absent" and not rock.get("rockspec") and not str(rock.get("version") or "").strip():
            found.append(f"{name} (luarocks_extra_rocks, no version)")
    if rocks_state == "latest":
        found.extend(f"{rock} (luarocks_rocks_state latest)" for rock in rocks or [])
    return found


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"unpinned_rocks": unpinned_rocks}
