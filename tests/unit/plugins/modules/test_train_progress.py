"""The train_progress module, run the way Ansible runs it."""

from __future__ import annotations

from pathlib import Path

import pytest
from ansible_collections.rnn_bootstrap.char_rnn.plugins.modules import train_progress


@pytest.mark.parametrize(
    ("log", "iteration", "val_loss", "model", "last_checkpoint"),
    [
        ("train-lstm.log", 284, 3.1596, "lstm", "cv/lm_tiny_epoch2.00_3.1596.t7"),
        ("train-gru.log", 142, 3.1838, "gru", "cv/lm_tinygru_epoch1.00_3.1838.t7"),
    ],
)
def test_real_logs(real: Path, run_module, log: str, iteration: int, val_loss: float, model: str, last_checkpoint):
    failed, result = run_module(train_progress.main, {"path": str(real / log)})
    assert not failed
    assert result["changed"] is False
    assert (result["exists"], result["truncated"], result["log_path"]) == (True, False, str(real / log))
    assert (result["iteration"], result["total_iterations"], result["finished"]) == (iteration, iteration, True)
    assert (result["val_loss"], result["model"], result["last_checkpoint"]) == (val_loss, model, last_checkpoint)
    assert result["eta_seconds"] == 0
    assert result["errors"] == []


def test_tail_bytes(real: Path, run_module) -> None:
    failed, result = run_module(train_progress.main, {"path": str(real / "train-lstm.log"), "tail_bytes": 1000})
    assert not failed
    assert (result["truncated"], result["size"]) == (True, 7050)
    assert (result["iteration"], result["val_loss"], result["model"]) == (284, 3.1596, None)


def test_running_log(real: Path, tmp_path: Path, run_module) -> None:
    lines = (real / "train-lstm.log").read_text().splitlines(keepends=True)
    cut = next(n for n, line in enumerate(lines) if line.startswith("200/284"))
    log = tmp_path / "train.log"
    log.write_text("".join(lines[: cut + 1]))
    failed, result = run_module(train_progress.main, {"path": str(log), "median_of": 5, "_ansible_check_mode": True})
    assert not failed
    assert (result["iteration"], result["epoch"], result["finished"]) == (200, 1.408, False)
    assert result["seconds_per_batch"] == 0.0037  # 180..200: 0.0036 0.0075 0.0037 0.0037 0.0033
    assert result["eta_seconds"] == pytest.approx(84 * 0.0037, abs=1e-3)  # rounded to ms
    assert result["val_loss"] == 3.2339


def test_missing_log(tmp_path: Path, run_module) -> None:
    failed, result = run_module(train_progress.main, {"path": str(tmp_path / "train.log")})
    assert failed
    assert result["msg"] == f"training log {tmp_path / 'train.log'} does not exist"
    failed, result = run_module(train_progress.main, {"path": str(tmp_path / "train.log"), "missing_ok": True})
    assert not failed
    assert (result["exists"], result["segments"], result["iteration"]) == (False, 0, None)


@pytest.mark.parametrize(("args", "needle"), [({"tail_bytes": -1}, "tail_bytes"), ({"median_of": 0}, "median_of")])
def test_bad_numbers(real: Path, run_module, args: dict, needle: str) -> None:
    failed, result = run_module(train_progress.main, {"path": str(real / "train-gru.log"), **args})
    assert failed
    assert needle in result["msg"]


def test_ansible_adhoc(real: Path, ansible_adhoc) -> None:
    result = ansible_adhoc(
        "-m", "rnn_bootstrap.char_rnn.train_progress", "-a", f"path={real}/train-gru.log tail_bytes=2000"
    )
    assert result.get("failed") is not True, result
    assert (result["iteration"], result["total_iterations"], result["val_loss"]) == (142, 142, 3.1838)
    assert result["truncated"] is True


def test_no_history_unless_asked(real: Path, run_module) -> None:
    failed, result = run_module(train_progress.main, {"path": str(real / "train-gru.log")})
    assert not failed
    assert "history" not in result


def test_history(real: Path, run_module) -> None:
    args = {"path": str(real / "train-lstm.log"), "history": True, "history_points": 20}
    failed, result = run_module(train_progress.main, {**args, "_ansible_check_mode": True})
    assert not failed
    history = result["history"]
    assert (len(history["train"]), history["train_points"], history["segments"]) == (20, 56, 1)
    assert (history["train"][0], history["train"][-1]) == ([5, 3.95151269], [280, 3.2454087])
    assert [p[0] for p in history["val"]] == [50, 100, 150, 200, 250, 284]
    assert result["iteration"] == 284  # the summary is unchanged


def test_history_of_a_missing_log(tmp_path: Path, run_module) -> None:
    args = {"path": str(tmp_path / "train.log"), "missing_ok": True, "history": True}
    failed, result = run_module(train_progress.main, args)
    assert not failed
    assert result["history"] == {"train": [], "val": [], "train_points": 0, "val_points": 0, "segments": 0}


def test_history_points_too_few(real: Path, run_module) -> None:
    args = {"path": str(real / "train-lstm.log"), "history": True, "history_points": 1}
    failed, result = run_module(train_progress.main, args)
    assert failed
    assert result["msg"] == "history_points must be at least 2 (a curve needs two points), not 1"
