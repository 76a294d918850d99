"""The checkpoint_info module, run the way Ansible runs it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from ansible_collections.rnn_bootstrap.char_rnn.plugins.modules import checkpoint_info

LSTM_LATEST = "lm_tiny_epoch2.00_3.1596.t7"
GRU = "lm_tinygru_epoch1.00_3.1838.t7"


@pytest.fixture
def no_torchfile(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on a target without the torchfile package."""
    monkeypatch.setattr(checkpoint_info, "torchfile", None)


def test_real_lstm_run(real: Path, torchfile, run_module) -> None:
    failed, result = run_module(checkpoint_info.main, {"dir": str(real), "savefile": "tiny"})
    assert not failed
    assert result["changed"] is False
    assert (result["exists"], result["torchfile"], result["count"], result["valid_count"]) == (True, True, 3, 3)
    assert result["latest"]["name"] == result["best"]["name"] == LSTM_LATEST
    assert result["latest"]["iteration"] == 284
    assert result["latest"]["epoch"] == 2.0
    assert result["latest"]["opt"]["model"] == "lstm"


def test_real_gru_checkpoint(real: Path, torchfile, run_module) -> None:
    failed, result = run_module(checkpoint_info.main, {"path": str(real), "savefile": "tinygru"})
    assert not failed
    gru = result["latest"]
    assert (gru["name"], gru["iteration"], gru["epoch"], gru["val_loss"]) == (GRU, 142, 1.0, 3.1838)
    assert (gru["opt"]["model"], gru["opt"]["num_layers"], gru["opt"]["rnn_size"]) == ("gru", 2, 16)
    assert list(gru["val_losses"]) == [60, 120, 142]
    assert gru["size"] == 200750


@pytest.mark.parametrize("mode", ["auto", "never"])
def test_without_torchfile(real: Path, tmp_path: Path, copy_as, run_module, no_torchfile, mode: str) -> None:
    copy_as(real / LSTM_LATEST, tmp_path, LSTM_LATEST, mtime=1_700_000_000)
    copy_as(real / LSTM_LATEST, tmp_path, "lm_tiny_epoch3.00_3.0000.t7", mtime=1_700_000_100, size=4096)
    failed, result = run_module(checkpoint_info.main, {"dir": str(tmp_path), "read_contents": mode})
    assert not failed
    assert result["torchfile"] is False
    assert [e["read"] for e in result["checkpoints"]] == [False, False]
    assert result["latest"]["name"] == LSTM_LATEST
    assert result["invalid"] == [str(tmp_path / "lm_tiny_epoch3.00_3.0000.t7")]


def test_never_does_not_load_even_when_available(real: Path, torchfile, run_module) -> None:
    failed, result = run_module(checkpoint_info.main, {"dir": str(real), "read_contents": "never"})
    assert not failed
    assert result["torchfile"] is False
    assert "iteration" not in result["latest"]


def test_always_without_torchfile_fails(real: Path, run_module, no_torchfile) -> None:
    failed, result = run_module(checkpoint_info.main, {"dir": str(real), "read_contents": "always"})
    assert failed
    assert "torchfile" in result["msg"]


def test_missing_dir_fails_naming_it(tmp_path: Path, run_module) -> None:
    missing = tmp_path / "cv"
    failed, result = run_module(checkpoint_info.main, {"dir": str(missing)})
    assert failed
    assert result["msg"] == f"checkpoint dir {missing} does not exist"
    assert result["exists"] is False


def test_missing_dir_ok(tmp_path: Path, run_module) -> None:
    failed, result = run_module(checkpoint_info.main, {"dir": str(tmp_path / "cv"), "missing_ok": True})
    assert not failed
    assert (result["exists"], result["checkpoints"], result["latest"], result["best"]) == (False, [], None, None)
    assert result["count"] == 0


def test_not_a_directory(real: Path, run_module) -> None:
    failed, result = run_module(checkpoint_info.main, {"dir": str(real / GRU), "missing_ok": True})
    assert failed
    assert "is not a directory" in result["msg"]


def test_empty_dir(tmp_path: Path, run_module) -> None:
    failed, result = run_module(checkpoint_info.main, {"dir": str(tmp_path)})
    assert not failed
    assert (result["exists"], result["count"], result["latest"]) == (True, 0, None)


def test_check_mode_reads_the_same(real: Path, run_module) -> None:
    _failed, normal = run_module(checkpoint_info.main, {"dir": str(real)})
    failed, checked = run_module(checkpoint_info.main, {"dir": str(real), "_ansible_check_mode": True})
    assert not failed
    assert checked == normal


def test_ansible_adhoc(real: Path, ansible_adhoc) -> None:
    result = ansible_adhoc("-m", "rnn_bootstrap.char_rnn.checkpoint_info", "-a", f"dir={real} savefile=tiny", "--check")
    assert result.get("failed") is not True, result
    assert result["latest"]["name"] == LSTM_LATEST
    assert [e["name"] for e in result["checkpoints"]] == [
        "lm_tiny_epoch0.35_3.3196.t7",
        "lm_tiny_epoch1.06_3.2739.t7",
        LSTM_LATEST,
    ]


def test_ansible_adhoc_missing_dir(tmp_path: Path, ansible_adhoc) -> None:
    result = ansible_adhoc("-m", "rnn_bootstrap.char_rnn.checkpoint_info", "-a", f"dir={tmp_path}/cv")
    assert result["failed"] is True
    assert result["msg"] == f"checkpoint dir {tmp_path}/cv does not exist"


def test_module_imports_without_torchfile(real: Path, run_module, monkeypatch: pytest.MonkeyPatch) -> None:
    """`import torchfile` failing on the target leaves the module working, structure-only."""
    import importlib

    monkeypatch.setitem(sys.modules, "torchfile", None)  # makes `import torchfile` raise ImportError
    reloaded = importlib.reload(checkpoint_info)
    try:
        assert reloaded.torchfile is None
        failed, result = run_module(reloaded.main, {"dir": str(real), "savefile": "tinygru"})
        assert not failed
        assert (result["torchfile"], result["latest"]["read"], result["latest"]["valid"]) == (False, False, True)
    finally:
        monkeypatch.undo()
        importlib.reload(checkpoint_info)
