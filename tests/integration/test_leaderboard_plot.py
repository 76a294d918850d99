"""playbooks/leaderboard.yml with char_rnn_leaderboard_plot_dir, on localhost against real char-rnn output.

A sweep record of two runs points at copies of tests/fixtures/char-rnn (the LSTM run `tiny` and the
GRU run `tinygru`, their logs and checkpoints); there is no systemd unit and no launcher state here.
The play ranks the runs by best val loss, writes one PNG a run and one overlaying both, and a second
run leaves the PNGs alone.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path
from typing import Any

import pytest
from localplay import REPO, playbook, task_results

REAL = REPO / "tests" / "fixtures" / "char-rnn"  # genuine char-rnn output (its README.md)
RUNS = {"tiny": ("train-lstm.log", {"model": "lstm"}), "tinygru": ("train-gru.log", {"model": "gru"})}


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def fake_sweep(tmp_path: Path) -> Path:
    """The record sweep.yml writes (<config dir>/sweeps/<name>.json), over the fixture runs."""
    config_dir = tmp_path / "etc"
    (config_dir / "sweeps").mkdir(parents=True)
    runs = []
    for run, (log, varied) in RUNS.items():
        checkpoints = tmp_path / "cv" / run
        checkpoints.mkdir(parents=True)
        for t7 in REAL.glob(f"lm_{run}_epoch*.t7"):
            shutil.copyfile(t7, checkpoints / t7.name)
        shutil.copyfile(REAL / log, tmp_path / f"{run}.log")
        runs.append({
            "run": run,
            "options": varied,
            "varied": varied,
            "log_path": str(tmp_path / f"{run}.log"),
            "state_path": str(tmp_path / f"{run}.state.json"),  # none: never restarted by a launcher
            "checkpoint_path": str(checkpoints),
        })  # fmt: skip
    (config_dir / "sweeps" / "t.json").write_text(json.dumps({"sweep": "t", "state": "started", "runs": runs}))
    return config_dir


def leaderboard(tmp_path: Path, config_dir: Path) -> dict[str, dict[str, Any]]:
    plays = [
        {
            "import_playbook": str(REPO / "playbooks" / "leaderboard.yml"),
            "vars": {
                "char_rnn_sweep_name": "t",
                "char_rnn_train_config_dir": str(config_dir),
                "char_rnn_leaderboard_plot_dir": str(tmp_path / "plots"),
                "char_rnn_leaderboard_csv": str(tmp_path / "board.csv"),
                "char_rnn_leaderboard_json": str(tmp_path / "board.json"),
                "char_rnn_leaderboard_fetch": False,  # no training user or sample.lua here
                "ansible_become": False,
            },
        }
    ]
    return task_results(playbook(tmp_path, plays, timeout=300))


def test_leaderboard_plots_every_run_and_the_sweep(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")  # requirements-test.txt pins it; test_status_plot.py fails without it in CI
    config_dir = fake_sweep(tmp_path)
    first = leaderboard(tmp_path, config_dir)
    records = json.loads((tmp_path / "board.json").read_text())["rows"]
    # lm_tiny_epoch2.00_3.1596.t7 beats lm_tinygru_epoch1.00_3.1838.t7
    assert [(r["run"], r["best_val_loss"]) for r in records] == [("tiny", 3.1596), ("tinygru", 3.1838)]

    per_run = first["Draw each run's loss curves on the controller"]["results"]
    assert [(r["item"]["name"], r["plotted"], r["curves"]) for r in per_run] == [
        ("localhost/tiny", True, 2),
        ("localhost/tinygru", True, 2),
    ]
    for run in RUNS:
        assert png_size(tmp_path / "plots" / f"localhost-{run}.png") == (800, 500)
    overlay = first["Draw every run of the sweep on one plot"]
    assert (overlay["changed"], overlay["plotted"], overlay["curves"]) == (True, True, 4), overlay
    colors = overlay["colors"]
    assert [c["name"] for c in colors] == ["localhost/tiny", "localhost/tinygru"]
    assert len({c["val"] for c in colors}) == 2  # one colour a run
    sweep_png = tmp_path / "plots" / "sweep-t.png"
    assert png_size(sweep_png) == (800, 500)
    assert first["Say where the plots are, or why there are none"]["msg"] == f"{sweep_png} drawn: 4 curves"

    before = sweep_png.read_bytes()
    second = leaderboard(tmp_path, config_dir)
    assert second["Draw every run of the sweep on one plot"]["changed"] is False
    assert not any(r["changed"] for r in second["Draw each run's loss curves on the controller"]["results"])
    assert sweep_png.read_bytes() == before
