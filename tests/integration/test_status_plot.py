"""playbooks/status.yml with char_rnn_status_plot_dir, on localhost against the real LSTM log.

The run's configuration points at a copy of tests/fixtures/char-rnn/train-lstm.log; there is no
launcher state and no systemd here (the unit's state is "unknown"). The play prints the status line,
writes <dir>/localhost-default.png, and a second run leaves it alone; without matplotlib on the
controller it says so and still prints the line.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path
from typing import Any

import pytest
from localplay import REPO, playbook, task_results

REAL = REPO / "tests" / "fixtures" / "char-rnn"  # genuine char-rnn output (its README.md)
PLOT = "Draw the loss curves on the controller"
SAY = "Say where the plot is, or why there is none"


def status(tmp_path: Path) -> dict[str, dict[str, Any]]:
    config_dir = tmp_path / "etc"
    if not config_dir.exists():
        config_dir.mkdir()
        shutil.copyfile(REAL / "train-lstm.log", tmp_path / "default.log")
        config = {
            "log_path": str(tmp_path / "default.log"),
            "state_path": str(tmp_path / "default.state.json"),  # none: a run the launcher has not restarted
            "unit": "char-rnn-train-default.service",
        }
        (config_dir / "default.json").write_text(json.dumps(config))
    plays = [
        {
            "import_playbook": str(REPO / "playbooks" / "status.yml"),
            "vars": {
                "char_rnn_train_config_dir": str(config_dir),
                "char_rnn_status_plot_dir": str(tmp_path / "plots"),
                "ansible_become": False,  # the play becomes root; here the test's user writes the PNG
            },
        }
    ]
    return task_results(playbook(tmp_path, plays, timeout=300))


def test_status_writes_a_plot(tmp_path: Path) -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        if os.environ.get("CHARRNN_REQUIRE_TOOLS") == "1":
            pytest.fail("matplotlib is not installed (requirements-test.txt pins it)", pytrace=False)
        pytest.skip("matplotlib is not installed")
    first = status(tmp_path)
    assert "run default | unknown | iteration 284/284 |" in first["Report"]["msg"]
    assert "val loss 3.1596" in first["Report"]["msg"]
    history = first["Read the run's loss history for the plot"]["history"]
    assert (history["train_points"], history["val_points"]) == (56, 6)
    assert history["val"][-1] == [284, 3.1596]  # the status line's iteration and val loss
    plot = first[PLOT]
    assert (plot["changed"], plot["plotted"], plot["curves"]) == (True, True, 2), plot
    png = tmp_path / "plots" / "localhost-default.png"
    assert plot["dest"] == str(png)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == (800, 500)
    assert first[SAY]["msg"] == f"{png} drawn: 2 curves"

    second = status(tmp_path)
    assert (second[PLOT]["changed"], second[PLOT]["plotted"]) == (False, True)
    assert png.read_bytes() == data


def test_status_without_matplotlib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a matplotlib that fails to import, first on the controller's path
    blocker = tmp_path / "no-matplotlib" / "matplotlib"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('No module named matplotlib (test)')\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(blocker.parent), os.environ.get("PYTHONPATH")])))
    results = status(tmp_path)
    assert "iteration 284/284" in results["Report"]["msg"]
    plot = results[PLOT]
    assert plot.get("failed") is not True
    assert (plot["changed"], plot["plotted"]) == (False, False)
    assert "matplotlib is not installed for the controller's Python" in results[SAY]["msg"]
    assert "pip install 'matplotlib==" in results[SAY]["msg"]
    assert not (tmp_path / "plots").exists()
