"""Run a playbook on this machine and read its results: what the role tests on localhost share."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def playbook(tmp_path: Path, plays: list[dict[str, Any]], timeout: int = 600) -> dict[str, Any]:
    """Run PLAYS on localhost (local connection, this test's Python: no interpreter discovery);
    return the ``ansible.posix.json`` callback's result."""
    path = tmp_path / "play.yml"
    path.write_text(json.dumps(plays))
    inventory = tmp_path / "inventory.ini"
    inventory.write_text(f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
        "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
    }
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory), str(path)],
        cwd=REPO, env=env, capture_output=True, text=True, check=False, timeout=timeout,
    )  # fmt: skip
    assert proc.stdout.lstrip().startswith("{"), proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def task_results(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Results on localhost by task name (without the "role : " prefix the callback adds)."""
    return {
        t["task"]["name"].split(" : ", 1)[-1]: t["hosts"]["localhost"]
        for t in data["plays"][0]["tasks"]
        if "localhost" in t["hosts"]
    }
