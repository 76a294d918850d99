"""The train_status filter: whole-run figures across -init_from restarts, and the status line."""

from __future__ import annotations

from pathlib import Path

import pytest
from ansible_collections.rnn_bootstrap.char_rnn.plugins.filter.train_status import (
    FilterModule,
    duration,
    resumed_val_loss,
    train_status,
)
from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils.char_rnn_log import parse_text

STATE = {
    "total_iterations": 500,
    "max_epochs": 5.0,
    "finished": False,
    "segments": [
        {"started": 1, "offset_iterations": 0, "offset_epochs": 0.0, "init_from": None},
        {"started": 2, "offset_iterations": 200, "offset_epochs": 2.0, "init_from": "/cv/lm_run_epoch2.00_1.7500.t7"},
    ],
}
SERVICE = {"ActiveState": "active", "SubState": "running"}


def test_offsets_of_earlier_segments_are_added():
    progress = {
        "iteration": 50,
        "total_iterations": 300,
        "epoch": 0.5,
        "train_loss": 1.61234,
        "seconds_per_batch": 0.15,
        "val_loss": None,
        "errors": [],
    }
    status = train_status(progress, "run", STATE, SERVICE)
    assert (status["iteration"], status["total_iterations"], status["epoch"]) == (250, 500, 2.5)
    assert status["eta_seconds"] == 250 * 0.15
    assert status["val_loss"] == 1.75  # the checkpoint it resumed from, until this segment saves one
    assert status["restarts"] == 1
    assert status["line"] == (
        "run run | active (running) | iteration 250/500 | epoch 2.50/5 | train loss 1.6123 | 0.150 s/batch | "
        "val loss 1.7500 | ETA 0:00:38 | restarts 1"
    )


def test_real_log_without_state(real: Path):
    progress = parse_text((real / "train-lstm.log").read_text())
    status = train_status(progress, "tiny", None, {"ActiveState": "active", "SubState": "exited"})
    assert status["iteration"] == status["total_iterations"] == 284
    assert status["finished"] is True and status["eta_seconds"] == 0
    assert status["line"].startswith("run tiny | active (finished) | iteration 284/284 | epoch 2.00 |")
    assert "val loss 3.1596" in status["line"]


def test_nothing_yet():
    status = train_status({}, "new", None, None)
    assert status["line"] == (
        "run new | unknown | iteration -/- | epoch - | train loss - | - s/batch | val loss - | ETA - | restarts 0"
    )


def test_errors_and_durations():
    status = train_status({"errors": ["luajit: train.lua:1: boom"]}, "x", None, {"ActiveState": "failed"})
    assert status["line"].endswith("| error: luajit: train.lua:1: boom")
    assert "| failed |" in status["line"]
    assert duration(90061) == "1d01h01m"
    assert FilterModule().filters()["train_status"] is train_status


def test_a_run_stopped_for_disk_space_says_why():
    reason = "low disk space: 90.0 MB free in /cv, less than char_rnn_train_min_free_mb 100 MB plus 0.2 MB"
    state = {**STATE, "stopped": {"reason": reason, "at": 3}}
    progress = {"iteration": 50, "total_iterations": 300, "epoch": 0.5, "seconds_per_batch": 0.15, "errors": []}
    status = train_status(progress, "run", state, {"ActiveState": "failed", "SubState": "failed"})
    assert status["stopped"] == reason
    assert status["eta_seconds"] is None  # it will not go on by itself
    assert status["line"].startswith("run run | failed (failed) | iteration 250/500 |")
    assert status["line"].endswith(f"| ETA - | restarts 1 | stopped: {reason}")
    assert train_status(progress, "run", STATE, SERVICE)["stopped"] is None


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/cv/lm_run_epoch2.00_1.7500.t7", 1.75),
        ("cv/lm_my_run_epoch0.11_3.9236.t7", 3.9236),
        ("/cv/lm_run_epoch2.00_nan.t7", None),  # nothing to show: "-" as before
        ("/cv/lm_run_epoch2.00_inf.t7", None),
        ("/cv/run_2.00.t7", None),  # not a checkpoint name
    ],
)
def test_resumed_val_loss_reads_the_name_by_the_one_rule(path: str, expected: float | None):
    assert resumed_val_loss(path) == expected
