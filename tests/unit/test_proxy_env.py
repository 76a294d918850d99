"""Every task that downloads runs with rnn_bootstrap_proxy_env (a static check over the YAML).

A task downloads when its module fetches over the network (Git, get_url, uri, pip, the package
managers, S3 and the other AWS APIs, LuaRocks) or its command does (pip install/download, git
clone/fetch). Its `environment` (its own or an enclosing block's) must use rnn_bootstrap_proxy_env;
a raw task, which Ansible runs without `environment`, must export it in its command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOWNLOADING = {
    "ansible.builtin.git",
    "ansible.builtin.get_url",
    "ansible.builtin.uri",
    "ansible.builtin.pip",
    "ansible.builtin.package",
    "ansible.builtin.apt",
    "ansible.builtin.dnf",
    "ansible.builtin.yum",
    "community.general.zypper",
    "rnn_bootstrap.char_rnn.luarocks",
}
COMMANDS = ("pip install", "pip download", "git clone", "git fetch", "curl ", "wget ")
RAW_INSTALLS = ("dnf ", "zypper ", "apt-get ", "yum ")
VAR = "rnn_bootstrap_proxy_env"


def task_files() -> list[Path]:
    return sorted([*REPO.glob("roles/*/tasks/*.yml"), *REPO.glob("playbooks/*.yml")])


def module_of(task: dict[str, Any]) -> str:
    keys = [k for k in task if "." in k and not k.startswith("ansible.builtin.include") and k != "group/amazon.aws.aws"]
    return keys[0] if keys else ""


def walk(items: list[Any], env: str, found: list[tuple[str, dict[str, Any], str]]) -> None:
    for task in items or []:
        if not isinstance(task, dict):
            continue
        here = str(task.get("environment", "")) or env
        for key in ("block", "rescue", "always", "tasks", "pre_tasks", "post_tasks", "handlers"):
            if isinstance(task.get(key), list):
                walk(task[key], here, found)
        module = module_of(task)
        if module:
            found.append((module, task, here))


def downloads(module: str, task: dict[str, Any]) -> bool:
    if module in DOWNLOADING or module.startswith("amazon.aws."):
        return True
    args = task[module]
    text = str(args.get("cmd", "") if isinstance(args, dict) else args)
    if module in ("ansible.builtin.command", "ansible.builtin.shell"):
        return any(c in text for c in COMMANDS)
    if module == "ansible.builtin.raw":
        return any(c in text for c in RAW_INSTALLS)
    return False


def download_tasks() -> list[tuple[str, str, dict[str, Any], str]]:
    out = []
    for path in task_files():
        found: list[tuple[str, dict[str, Any], str]] = []
        walk(yaml.safe_load(path.read_text()), "", found)
        out += [(str(path.relative_to(REPO)), m, t, env) for m, t, env in found if downloads(m, t)]
    return out


def test_the_check_sees_the_downloads_it_must() -> None:
    """A check that found nothing could not fail: it must see each kind the roles use."""
    modules = {found[1] for found in download_tasks()}
    for expected in ("ansible.builtin.git", "ansible.builtin.get_url", "ansible.builtin.apt",
                     "amazon.aws.s3_object", "ansible.builtin.raw", "ansible.builtin.command",
                     "rnn_bootstrap.char_rnn.luarocks", "community.general.zypper"):  # fmt: skip
        assert expected in modules, expected
    assert len(download_tasks()) >= 20


@pytest.mark.parametrize(
    ("path", "module", "task", "env"), download_tasks(), ids=lambda v: v if isinstance(v, str) and "/" in v else ""
)
def test_every_download_has_the_proxy_env(path: str, module: str, task: dict[str, Any], env: str) -> None:
    name = task.get("name", module)
    if module == "ansible.builtin.raw":
        assert VAR in str(task[module]), f"{path}: {name!r} (raw) does not export {VAR}"
    else:
        assert VAR in env, f"{path}: {name!r} ({module}) has no environment with {VAR}"
