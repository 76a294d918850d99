"""What the scenarios' verifiers share: their hosts, playbook runs, recaps, waits, unit properties."""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import testinfra
from testinfra.utils.ansible_runner import AnsibleRunner

PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[1]))
PODMAN_CONNECTIONS = frozenset({"podman", "containers.podman.podman"})


def inventory() -> str:
    return os.environ["MOLECULE_INVENTORY_FILE"]


@functools.cache
def _runner(path: str) -> AnsibleRunner:
    return AnsibleRunner(path)


def host_names() -> list[str]:
    return sorted(_runner(inventory()).get_hosts("all"))


def fast_host(host: testinfra.host.Host) -> testinfra.host.Host:
    """The same host over `podman exec` when Ansible reaches it with the podman connection."""
    backend = host.backend
    if backend.NAME != "ansible":
        return host
    name = backend.get_hostname()
    if backend.ansible_runner.get_variables(name).get("ansible_connection") in PODMAN_CONNECTIONS:
        return testinfra.get_host(f"podman://{name}")
    return host


@functools.cache
def container(name: str) -> testinfra.host.Host:
    """An inventory host by name (for tests that look at several hosts at once)."""
    return fast_host(testinfra.get_host(f"ansible://{name}?ansible_inventory={inventory()}"))


def playbook_command(book: str | Path, *extra: str, limit: str | None = None) -> list[str]:
    """ansible-playbook on Molecule's inventory; `book` is a path, or a name in playbooks/."""
    path = Path(book) if os.sep in str(book) else PROJECT / "playbooks" / book
    return ["ansible-playbook", "-i", inventory(), str(path), *extra, *(["--limit", limit] if limit else [])]


def playbook_env(json_output: bool = True) -> dict[str, str]:
    """No colours, and with `json_output` one line a result: messages and the recap can be searched for."""
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"}
    return {**env, "ANSIBLE_CALLBACK_RESULT_FORMAT": "json"} if json_output else env


def playbook(
    book: str | Path, *extra: str, limit: str | None = None, json_output: bool = True
) -> subprocess.CompletedProcess:
    """Run `playbook_command`; stderr is appended to stdout (ansible-core 2.19 reports failures on both)."""
    cmd = playbook_command(book, *extra, limit=limit)
    run = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=PROJECT, env=playbook_env(json_output))
    run.stdout += run.stderr
    return run


def playbook_on(host: testinfra.host.Host, book: str | Path, *extra: str) -> subprocess.CompletedProcess:
    """`playbook` limited to one host."""
    return playbook(book, *extra, limit=host.backend.get_hostname())


def extra_vars(variables: Mapping[str, Any]) -> list[str]:
    return ["-e", json.dumps(variables)]


def recap(out: str, field: str = "changed") -> int:
    """A field of the PLAY RECAP, summed over its hosts."""
    found = re.findall(rf"\b{field}=(\d+)", out.split("PLAY RECAP")[-1])
    assert found, out[-3000:]
    return sum(int(n) for n in found)


def wait_for(
    predicate: Callable[[], Any],
    timeout: float,
    what: str,
    interval: float = 1.0,
    detail: Callable[[], str] | None = None,
) -> Any:
    """The predicate's first truthy value; fails the test with `what` (and `detail()`) after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}" + (f"\n{detail()}" if detail else ""))
        time.sleep(interval)


def unit_property(host: testinfra.host.Host, prop: str, unit: str) -> str:
    return host.check_output(f"systemctl show -p {prop} --value {unit}")
