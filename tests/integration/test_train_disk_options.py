"""char_rnn_train's disk options are checked before anything is installed (ansible-playbook on localhost)."""

from __future__ import annotations

from pathlib import Path

import pytest
from localplay import playbook, task_results


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
    return task_results(playbook(tmp_path, plays, timeout=300))


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
