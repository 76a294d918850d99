#!/usr/bin/python
# Copyright: rnn_bootstrap maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: luarocks
short_description: Manage Lua rocks with Torch7's own LuaRocks
version_added: 0.1.0
description:
  - Install, upgrade or remove Lua rocks with a specific C(luarocks) executable, by default
    the one Torch7 installs under its prefix (C(/opt/torch/install/bin/luarocks)).
  - Never falls back to a C(luarocks) found on E(PATH); a distribution C(luarocks) would
    install into a different Lua tree (Lua 5.1/5.4 instead of Torch's LuaJIT) and C(th)
    would not see the rock.
  - Idempotent through C(luarocks list --porcelain); O(state=latest) compares with
    C(luarocks search --porcelain) using LuaRocks' own version ordering.
  - With O(rockspec), runs C(luarocks make ROCKSPEC) in O(chdir) (default the rockspec's
    directory). Such a rock counts as present when the rockspec's C(package) is installed
    at the rockspec's C(version); it is rebuilt only when that version is not installed or
    O(force=true). Sources changing under an unchanged version (for example C(scm-1)) are
    not detected; use O(force=true) to rebuild.
  - Options are passed as C(--opt=value), which both LuaRocks 3.x and the LuaRocks
    2.2 bundled with Torch7 accept.
author:
  - rnn_bootstrap maintainers (@rnn-bootstrap)
extends_documentation_fragment:
  - rnn_bootstrap.char_rnn.attributes
attributes:
  check_mode:
    support: full
    details: Runs only C(luarocks list) and C(luarocks search), never install/make/remove.
  diff_mode:
    support: none
options:
  name:
    description:
      - Rock name or list of rock names.
      - One of O(name) and O(rockspec) is required. With O(rockspec) it may be given and must
        equal the rockspec's C(package).
    type: list
    elements: str
    aliases: [rock]
  state:
    description:
      - V(present) installs the rock if no (matching O(version)) version is installed.
      - V(absent) removes all installed versions, or only those matching O(version).
      - V(latest) installs the newest version the rock servers offer when it is newer than
        the newest installed one. Not valid with O(version) or O(rockspec).
    type: str
    choices: [present, absent, latest]
    default: present
  version:
    description:
      - Version to install or remove, for example V(1.8.0-1) or V(1.8.0).
      - Without a revision (V(1.8.0)) any revision matches, as in LuaRocks.
      - Only valid with a single O(name); mutually exclusive with O(rockspec), whose own
        version is used.
    type: str
  rockspec:
    description:
      - Path to a local rockspec on the target; installs it with C(luarocks make).
      - The package name and version are read from the rockspec's top-level C(package)
        and C(version) fields (falling back to the C(NAME-VERSION.rockspec) file name).
    type: path
  chdir:
    description:
      - Directory to run C(luarocks make) in (the source tree). Defaults to the directory
        of O(rockspec). Requires O(rockspec).
    type: path
  server:
    description:
      - Rocks server URL or local directory passed as C(--server=...) (tried before the
        configured servers) or, with O(only_server=true), as C(--only-server=...).
      - Used by C(install), C(make) (dependencies) and C(search).
    type: str
  only_server:
    description:
      - Use only O(server), ignoring the servers configured for this LuaRocks.
    type: bool
    default: false
  executable:
    description:
      - Absolute path of the C(luarocks) executable to use. The module fails when it does
        not exist instead of looking on E(PATH).
    type: path
    default: /opt/torch/install/bin/luarocks
  tree:
    description:
      - Rocks tree passed as C(--tree=...). By default the LuaRocks' own default tree (for
        Torch7, its install prefix). Without it, a rock installed in any tree LuaRocks knows
        (including C(~/.luarocks)) counts as installed.
    type: path
  env:
    description:
      - Extra environment variables for every luarocks command, for example C(CMAKE_PREFIX_PATH),
        C(CC) or C(CFLAGS) for rocks built with cmake or a compiler.
    type: dict
    default: {}
  prepend_path:
    description:
      - Prepend the directory of O(executable) to E(PATH), so that build steps find Torch's
        C(luajit)/C(th)/C(luarocks) before any distribution ones.
    type: bool
    default: true
  force:
    description:
      - With O(state=present) or O(rockspec), reinstall (rebuild) even when the wanted version
        is already installed; the task then always reports a change.
      - With O(state=latest), reinstall the newest installed version when nothing newer exists.
      - With O(state=absent), pass C(--force) to C(luarocks remove) so removal proceeds even
        when it breaks other rocks' dependencies.
    type: bool
    default: false
  extra_args:
    description:
      - Extra arguments appended to C(luarocks install) and C(luarocks make), for example
        V(--no-doc) or V(--deps-mode=one). Use the C(--opt=value) form.
    type: list
    elements: str
    default: []
notes:
  - Uses C(luarocks list --porcelain) and C(luarocks search --porcelain); C(luarocks list --outdated)
    is not used.
seealso:
  - name: LuaRocks command line
    description: LuaRocks commands and options.
    link: https://github.com/luarocks/luarocks/wiki/luarocks
"""

EXAMPLES = r"""
- name: Rocks char-rnn needs beyond Torch, in Torch's tree
  rnn_bootstrap.char_rnn.luarocks:
    name:
      - luafilesystem
      - lua-cjson

- name: Pin a version from a local rocks server only
  rnn_bootstrap.char_rnn.luarocks:
    name: lua-cjson
    version: 2.1.0-1
    server: /srv/rocks
    only_server: true

- name: Keep penlight up to date
  rnn_bootstrap.char_rnn.luarocks:
    name: penlight
    state: latest

- name: Build nngraph from a checkout with Torch's luarocks
  rnn_bootstrap.char_rnn.luarocks:
    rockspec: /opt/torch/extra/nngraph/nngraph-scm-1.rockspec
    env:
      CMAKE_BUILD_TYPE: Release

- name: A luarocks installed elsewhere, into a private tree
  rnn_bootstrap.char_rnn.luarocks:
    name: luafilesystem
    executable: /usr/bin/luarocks
    tree: /srv/lua-tree

- name: Remove a rock
  rnn_bootstrap.char_rnn.luarocks:
    name: lua-cjson
    state: absent
"""

RETURN = r"""
name:
  description: Rock names handled (for O(rockspec), the rockspec's package).
  returned: always
  type: list
  elements: str
  sample: [luafilesystem, lua-cjson]
versions_before:
  description: Installed versions of each rock before the task.
  returned: always
  type: dict
  sample: {"luafilesystem": [], "lua-cjson": ["2.1.0-1"]}
versions_after:
  description:
    - Installed versions of each rock after the task, as listed by C(luarocks list).
    - In check mode, the expected versions; V((unknown)) when the version an install would
      pick cannot be known without running it.
  returned: always
  type: dict
  sample: {"luafilesystem": ["1.8.0-1"], "lua-cjson": ["2.1.0-1"]}
actions:
  description: What was done (or, in check mode, would be done), one entry per changed rock.
  returned: always
  type: list
  elements: dict
  sample: [{"rock": "luafilesystem", "action": "install", "version": null}]
rockspec:
  description: Package and version read from O(rockspec).
  returned: when O(rockspec) is given and could be parsed
  type: dict
  sample: {"path": "/src/hello-1.0-1.rockspec", "package": "hello", "version": "1.0-1"}
cmd:
  description: The luarocks commands that were run, in order (shell-quoted for reading; no shell is used).
  returned: always
  type: list
  elements: str
  sample: ["/opt/torch/install/bin/luarocks list --porcelain luafilesystem"]
rock:
  description: The rock (for O(rockspec), C(package (path))) whose luarocks command failed.
  returned: failure of a luarocks command
  type: str
  sample: lua-cjson
failed_cmd:
  description: The command that failed.
  returned: failure of a luarocks command
  type: str
rc:
  description: Exit code of the failed command.
  returned: failure of a luarocks command
  type: int
stdout:
  description: Standard output of the failed command.
  returned: failure of a luarocks command
  type: str
stderr:
  description: Standard error of the failed command.
  returned: failure of a luarocks command
  type: str
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils.luarocks import (
    LuaRocks,
    LuaRocksError,
    ensure,
)


def argument_spec():
    return dict(
        name=dict(type="list", elements="str", aliases=["rock"]),
        state=dict(type="str", default="present", choices=["present", "absent", "latest"]),
        version=dict(type="str"),
        rockspec=dict(type="path"),
        chdir=dict(type="path"),
        server=dict(type="str"),
        only_server=dict(type="bool", default=False),
        executable=dict(type="path", default="/opt/torch/install/bin/luarocks"),
        tree=dict(type="path"),
        env=dict(type="dict", default={}),
        prepend_path=dict(type="bool", default=True),
        force=dict(type="bool", default=False),
        extra_args=dict(type="list", elements="str", default=[]),
    )


# The rules AnsibleModule checks itself (its messages name the options).
RULES = dict(
    required_one_of=[["name", "rockspec"]],
    mutually_exclusive=[["rockspec", "version"]],
    required_by={"chdir": "rockspec"},
)


def validate(params):
    """Return an error message for what the argument spec cannot express (values of one option
    that forbid another, a count of names, an absolute path), or None."""
    if params["state"] == "latest":
        if params.get("rockspec"):
            return (
                "state=latest is not supported with rockspec (a rockspec is one fixed version); "
                "use state=present, and force=true to rebuild"
            )
        if params.get("version"):
            return "version cannot be used with state=latest"
    if params.get("version") and len(params.get("name") or []) > 1:
        return "version can only be used with a single name"
    if not os.path.isabs(params["executable"]):
        return f"executable must be an absolute path, got {params['executable']!r}"
    return None


def executable_error(path):
    if os.path.isfile(path) and os.access(path, os.X_OK):
        return None
    problem = "does not exist" if not os.path.exists(path) else "is not an executable file"
    return (
        f"luarocks executable {path} {problem}. Install Torch7 first (it ships its own LuaRocks "
        "under its prefix) or set executable to the right luarocks; this module does not fall "
        "back to a luarocks on PATH, which would install into a different Lua tree."
    )


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True, **RULES)
    p = module.params
    error = validate(p)
    if error:
        module.fail_json(msg=error)
    error = executable_error(p["executable"])
    if error:
        module.fail_json(msg=error, executable=p["executable"])

    environ = {"LANG": "C", "LC_ALL": "C"}
    if p["prepend_path"]:
        environ["PATH"] = os.pathsep.join([os.path.dirname(p["executable"]), os.environ.get("PATH", os.defpath)])
    environ.update({str(k): str(v) for k, v in (p["env"] or {}).items()})

    def run(argv, cwd=None):
        return module.run_command(argv, cwd=cwd, environ_update=environ, check_rc=False)

    lr = LuaRocks(
        run,
        p["executable"],
        tree=p["tree"],
        server=p["server"],
        only_server=p["only_server"],
        extra_args=p["extra_args"],
    )
    try:
        result = ensure(p, lr, module.check_mode)
    except LuaRocksError as exc:
        module.fail_json(msg=exc.msg, **exc.details)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
