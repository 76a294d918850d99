"""char_rnn_train's disk options are checked before anything is installed (ansible-playbook on localhost)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def preflight(tmp_path: Path, **role_vars) -> dict:
    plays = [
        {
            "hosts": "localhost",
            "gather_facts": False,
            "tasks": [
                {
                    "name": "Preflight",
                    "ansible.builtin.include_role": {
                        "name": "rnn_bootstrap.char_rnn.char_rnn_train",
                        "tasks_from": "preflight",
                    },
                    "vars": {"char_rnn_train_char_rnn_dir": str(tmp_path / "nowhere"), **role_vars},
                }
            ],
        }
    ]
    (tmp_path / "play.yml").write_text(json.dumps(plays))
    (tmp_path / "inventory.ini").write_text(
        f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n"
    )
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
        "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
    }
    run = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(tmp_path / "inventory.ini"),
         str(tmp_path / "play.yml")],
        cwd=REPO, env=env, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    data = json.loads(run.stdout)
    return {t["task"]["name"].split(" : ", 1)[-1]: t["hosts"]["localhost"] for t in data["plays"][0]["tasks"]}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("char_rnn_train_keep_checkpoints", -1),
        ("char_rnn_train_keep_checkpoints", 1.5),
        ("char_rnn_train_keep_checkpoints", "two"),
        ("char_rnn_train_keep_checkpoints", 100001),
        ("char_rnn_train_min_free_mb", -5),
        ("char_rnn_train_min_free_mb", 104857601),
    ],
)
def test_out_of_range_values_fail_naming_the_variable(tmp_path: Path, name: str, value):
    result = preflight(tmp_path, **{name: value})["Check the checkpoint retention and the free-space floor"]
    assert result.get("failed"), result
    failed = [r for r in result["results"] if r.get("failed")]
    assert len(failed) == 1
    assert f"{name} must be an integer from 0 to " in failed[0]["msg"] and f"not '{value}'" in failed[0]["msg"]


def test_values_in_range_pass(tmp_path: Path):
    tasks = preflight(tmp_path, char_rnn_train_keep_checkpoints=2, char_rnn_train_min_free_mb=1024)
    assert not tasks["Check the checkpoint retention and the free-space floor"].get("failed")
    # the preflight goes on (and stops where this host has no char-rnn)
    assert "train.lua is missing" in tasks["Require char-rnn and Torch (site.yml installs them)"]["msg"]
