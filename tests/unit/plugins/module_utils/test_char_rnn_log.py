"""plugins/module_utils/char_rnn_log.py against what the real `th train.lua` printed."""

from __future__ import annotations

from pathlib import Path

import pytest
from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils import char_rnn_log as log

LSTM_FINAL = {
    "segments": 1,
    "restarts": 0,
    "started": True,
    "iteration": 284,
    "total_iterations": 284,
    "epoch": 2.0,
    "finished": True,
    "evaluating": False,
    "train_loss": 3.2454087,
    "grad_param_norm": 0.29477,
    "seconds_per_batch": 0.0035,
    "eta_seconds": 0.0,
    "val_loss": 3.1596,
    "last_checkpoint": "cv/lm_tiny_epoch2.00_3.1596.t7",
    "progress_lines": 56,
    "errors": [],
    "model": "lstm",
    "num_layers": 1,
    "rnn_size": None,
    "vocab_size": 58,
    "num_parameters": 5850,
    "train_batches": 142,
    "val_batches": 8,
    "test_batches": 0,
    "init_from": None,
}
GRU_FINAL = {
    **LSTM_FINAL,
    "iteration": 142,
    "total_iterations": 142,
    "epoch": 1.0,
    "train_loss": 3.11899694,
    "grad_param_norm": 0.46207,
    "seconds_per_batch": 0.0088,  # median of the last 10 time/batch: (0.0087 + 0.0089) / 2
    "val_loss": 3.1838,
    "last_checkpoint": "cv/lm_tinygru_epoch1.00_3.1838.t7",
    "progress_lines": 28,
    "model": "gru",
    "num_layers": 2,
    "num_parameters": 6266,
}


def lines_of(real: Path, name: str) -> list[str]:
    return (real / name).read_text().splitlines(keepends=True)


def upto(lines: list[str], needle: str) -> list[str]:
    """The log as it was when the line containing ``needle`` had just been printed."""
    for n, line in enumerate(lines):
        if needle in line:
            return lines[: n + 1]
    raise AssertionError(f"{needle!r} not in log")


@pytest.mark.parametrize(("name", "expected"), [("train-lstm.log", LSTM_FINAL), ("train-gru.log", GRU_FINAL)])
def test_finished_real_runs(real: Path, name: str, expected: dict) -> None:
    summary = log.parse_text((real / name).read_text())
    for key, value in expected.items():
        assert summary[key] == value, key


def test_real_lstm_checkpoints_in_order(real: Path) -> None:
    summary = log.parse_text((real / "train-lstm.log").read_text())
    assert summary["checkpoints_saved"] == [
        "cv/lm_tiny_epoch0.35_3.3196.t7",
        "cv/lm_tiny_epoch0.70_3.3046.t7",
        "cv/lm_tiny_epoch1.06_3.2739.t7",
        "cv/lm_tiny_epoch1.41_3.2339.t7",
        "cv/lm_tiny_epoch1.76_3.1910.t7",
        "cv/lm_tiny_epoch2.00_3.1596.t7",
    ]


@pytest.mark.parametrize(
    ("needle", "iteration", "epoch", "train_loss", "val_loss", "evaluating", "eta"),
    [
        # mid-run: ETA = (284 - 150) * median of the last 10 time/batch (105..150: (0.0036 + 0.0037) / 2)
        ("150/284", 150, 1.056, 3.21264876, 3.2739, False, 134 * 0.00365),
        ("5/284", 5, 0.035, 3.95151269, None, False, 279 * 0.0068),
        # inside the 2nd evaluation: the checkpoint line has not come yet
        ("4/8...", 45, 0.317, 3.23406448, None, True, 239 * 0.0037),
        # checkpoint saved at iteration 50, its progress line not printed yet: 0.35 x 142 = 50
        ("saving checkpoint to cv/lm_tiny_epoch0.35", 50, 0.35, 3.23406448, 3.3196, False, 234 * 0.0037),
    ],
)
def test_partial_lstm_log(real: Path, needle, iteration, epoch, train_loss, val_loss, evaluating, eta) -> None:
    summary = log.parse_lines(upto(lines_of(real, "train-lstm.log"), needle))
    assert summary["iteration"] == iteration
    assert summary["total_iterations"] == 284
    assert summary["epoch"] == pytest.approx(epoch)
    assert summary["train_loss"] == train_loss
    assert summary["val_loss"] == val_loss
    assert summary["evaluating"] is evaluating
    assert summary["finished"] is False
    assert summary["eta_seconds"] == pytest.approx(eta, abs=1e-3)


def test_only_header_yet(real: Path) -> None:
    summary = log.parse_lines(upto(lines_of(real, "train-gru.log"), "cloning criterion"))
    assert summary["started"] is False
    assert summary["iteration"] is None
    assert summary["eta_seconds"] is None
    assert (summary["model"], summary["num_layers"], summary["vocab_size"]) == ("gru", 2, 58)
    assert summary["segments"] == 1


def test_empty_log() -> None:
    summary = log.parse_text("")
    assert (summary["segments"], summary["restarts"], summary["iteration"], summary["started"]) == (0, 0, None, False)


@pytest.mark.parametrize("median_of", [1, 3, 10, 1000])
def test_median_window(real: Path, median_of: int) -> None:
    expected = {1: 0.0080, 3: 0.0083, 10: 0.0088, 1000: 0.00865}[median_of]
    summary = log.parse_text((real / "train-gru.log").read_text(), median_of=median_of)
    assert summary["seconds_per_batch"] == pytest.approx(expected)


def test_two_runs_in_one_log_report_the_last(real: Path) -> None:
    text = (real / "train-lstm.log").read_text() + (real / "train-gru.log").read_text()
    summary = log.parse_text(text)
    assert (summary["segments"], summary["restarts"]) == (2, 1)
    for key, value in GRU_FINAL.items():
        if key not in ("segments", "restarts"):
            assert summary[key] == value, key


def resumed_run(real: Path, cut_at: str) -> str:
    """What a -init_from resume appends: same header, 'loading a model', counter back at 1."""
    gru = (real / "train-gru.log").read_text()
    resumed = gru.replace(
        "creating an gru with 2 layers",
        "loading a model from checkpoint cv/lm_tinygru_epoch1.00_3.1838.t7\t\n"
        "overwriting rnn_size=16, num_layers=2, model=gru based on the checkpoint.",
    )
    return gru + "".join(upto(resumed.splitlines(keepends=True), cut_at))


def test_init_from_resume_restarts_the_counter(real: Path) -> None:
    summary = log.parse_text(resumed_run(real, "30/142"))
    assert (summary["segments"], summary["restarts"]) == (2, 1)
    assert summary["iteration"] == 30
    assert summary["finished"] is False
    assert summary["init_from"] == "cv/lm_tinygru_epoch1.00_3.1838.t7"
    assert (summary["rnn_size"], summary["num_layers"], summary["model"]) == (16, 2, "gru")
    assert summary["val_loss"] is None  # no checkpoint saved by this run yet
    # median of the resumed run's 6 lines only (0.0085 + 0.0086) / 2, not of the earlier run
    assert summary["eta_seconds"] == pytest.approx(112 * 0.00855, abs=1e-3)


def test_gpu_fallback_lines_start_a_segment(real: Path) -> None:
    fallback = "package cunn not found!\t\npackage cutorch not found!\t\nFalling back on CPU mode\t\n"
    text = fallback + (real / "train-lstm.log").read_text() + fallback + (real / "train-gru.log").read_text()
    assert log.parse_text(text)["segments"] == 2


def test_journald_prefixes_and_crlf(real: Path) -> None:
    prefix = "Nov 29 04:45:12 trainer th[4242]: "
    text = "".join(prefix + line.rstrip("\n") + "\r\n" for line in lines_of(real, "train-lstm.log"))
    summary = log.parse_text(text)
    for key in ("iteration", "total_iterations", "val_loss", "model", "num_parameters", "seconds_per_batch"):
        assert summary[key] == LSTM_FINAL[key], key
    assert summary["last_checkpoint"] == LSTM_FINAL["last_checkpoint"]


@pytest.mark.parametrize(
    ("tail", "expected"),
    [
        (
            "/root/torch/install/bin/luajit: /root/torch/install/share/lua/5.1/torch/File.lua:351: "
            "read error: read 0 blocks instead of 1 at /root/torch/pkg/torch/lib/TH/THDiskFile.c:352\n"
            "stack traceback:\n\t[C]: in function 'read'\n\ttrain.lua:130: in main chunk\n",
            [
                "/root/torch/install/bin/luajit: /root/torch/install/share/lua/5.1/torch/File.lua:351: "
                "read error: read 0 blocks instead of 1 at /root/torch/pkg/torch/lib/TH/THDiskFile.c:352"
            ],
        ),
        ("loss is exploding, aborting.\t\n", ["loss is exploding, aborting."]),
        (
            "THCudaCheck FAIL file=generic/THCStorage.cu line=40 error=2 : out of memory\n"
            "error in tensor copy\nstack traceback:\n\t[C]: ?\n",
            ["out of memory", "error in tensor copy"],
        ),
    ],
)
def test_errors(real: Path, tail: str, expected: list[str]) -> None:
    text = "".join(upto(lines_of(real, "train-lstm.log"), "100/284")) + tail
    summary = log.parse_text(text)
    assert summary["errors"] == expected
    assert summary["iteration"] == 100


def test_errors_belong_to_their_segment(real: Path) -> None:
    text = (real / "train-lstm.log").read_text() + "luajit: train.lua:1: boom\nstack traceback:\n"
    text += (real / "train-gru.log").read_text()
    assert log.parse_text(text)["errors"] == []


@pytest.mark.parametrize("tail_bytes", [300, 1000, 4096])
def test_tail_read_drops_the_cut_line(real: Path, tail_bytes: int) -> None:
    text, truncated, size = log.read_tail(str(real / "train-lstm.log"), tail_bytes)
    assert (truncated, size, len(text)) == (True, 7050, tail_bytes)
    summary = log.parse_text(text, partial_first_line=truncated)
    # no header in the tail: train batches per epoch come from the progress lines (280 / 1.972)
    assert summary["iteration"] == 284
    assert summary["finished"] is True
    assert summary["val_loss"] == 3.1596
    assert summary["vocab_size"] is None


def test_tail_larger_than_file(real: Path) -> None:
    text, truncated, size = log.read_tail(str(real / "train-gru.log"), 10**9)
    assert (truncated, size) == (False, 3483)
    assert log.parse_text(text, partial_first_line=truncated)["num_parameters"] == 6266


# ----------------------------------------------------------------------------- loss history


def history_of(text: str, max_points: int = 500) -> dict:
    return log.loss_history(log.parser_for_text(text), max_points)


def test_history_of_a_real_run(real: Path) -> None:
    history = history_of((real / "train-lstm.log").read_text())
    assert (history["train_points"], history["val_points"], history["segments"]) == (56, 6, 1)
    assert history["train"][:2] == [[5, 3.95151269], [10, 3.51782461]]
    assert history["train"][-1] == [280, 3.2454087]
    # checkpoints at 50, 100, ... (eval_val_every 50) and the last iteration, 284 (tests/fixtures/char-rnn/README.md)
    assert history["val"] == [[50, 3.3196], [100, 3.3046], [150, 3.2739], [200, 3.2339], [250, 3.191], [284, 3.1596]]


def test_history_checkpoint_between_progress_lines(real: Path) -> None:
    """print_every not dividing eval_val_every: the iteration comes from the epoch, between its neighbours."""
    lines = [line for line in lines_of(real, "train-gru.log") if not line.startswith(("60/142", "120/142"))]
    history = history_of("".join(lines))
    # epoch 0.42 x 142 = 59.6 and 0.85 x 142 = 120.7: within a line of the truth (60, 120)
    assert [p[0] for p in history["val"]] == [60, 121, 142]


def lstm_resumed(real: Path, crash_after: str, init_from: str, resumed_upto: str) -> str:
    """The LSTM run killed after CRASH_AFTER, resumed from INIT_FROM (its counter back at 1)."""
    lstm = lines_of(real, "train-lstm.log")
    header = "".join(lstm[: lstm.index("cloning criterion\t\n") + 1]).replace(
        "creating an lstm with 1 layers",
        f"loading a model from checkpoint {init_from}\t\n"
        "overwriting rnn_size=16, num_layers=1, model=lstm based on the checkpoint.",
    )
    body = [line for line in lstm if "/284 (epoch" in line or "checkpoint" in line or "evaluating" in line]
    return "".join(upto(lstm, crash_after)) + header + "".join(upto(body, resumed_upto))


def test_history_stitches_a_resume(real: Path) -> None:
    # killed at 215; the newest checkpoint is iteration 200's; the resumed run goes to its own 60
    text = lstm_resumed(real, "215/284", "cv/lm_tiny_epoch1.41_3.2339.t7", "60/284")
    history = history_of(text)
    assert history["segments"] == 2
    iterations = [p[0] for p in history["train"]]
    assert iterations == sorted(set(iterations))
    # 205..215 were lost with the crash and done again: the resumed run's 5..15 stand for them
    assert [215, 3.06010221] not in history["train"]
    assert history["train"][39:43] == [[200, 3.1757064], [205, 3.95151269], [210, 3.51782461], [215, 3.46785271]]
    assert iterations[-1] == 260
    assert history["val"] == [[50, 3.3196], [100, 3.3046], [150, 3.2739], [200, 3.2339], [250, 3.3196]]


def test_history_resume_from_a_checkpoint_not_read(real: Path) -> None:
    text = lstm_resumed(real, "215/284", "cv/lm_tiny_epoch9.99_1.0000.t7", "10/284")
    history = history_of(text)
    assert [p[0] for p in history["train"]][-3:] == [215, 220, 225]  # continues after the last one seen


def test_history_a_fresh_run_starts_over(real: Path) -> None:
    text = (real / "train-lstm.log").read_text() + (real / "train-gru.log").read_text()
    assert history_of(text) == history_of((real / "train-gru.log").read_text())
    header_only = (real / "train-lstm.log").read_text() + "".join(upto(lines_of(real, "train-gru.log"), "creating"))
    assert history_of(header_only) == {"train": [], "val": [], "train_points": 0, "val_points": 0, "segments": 1}


def test_history_leaves_out_nan(real: Path) -> None:
    text = (real / "train-gru.log").read_text().replace("train_loss = 3.40430904", "train_loss = nan")
    history = history_of(text)
    assert history["train_points"] == 27
    assert [10, 3.40430904] not in history["train"]


@pytest.mark.parametrize(("count", "max_points", "expected"), [
    (10, 20, list(range(10))),
    (10, 10, list(range(10))),
    (10, 4, [0, 3, 6, 9]),
    (56, 2, [0, 55]),
    (5, 1, [4]),
    (1000, 7, [0, 166, 333, 500, 666, 832, 999]),
])  # fmt: skip
def test_downsample(count: int, max_points: int, expected: list[int]) -> None:
    assert log.downsample(list(range(count)), max_points) == expected


def test_history_downsampled(real: Path) -> None:
    history = history_of((real / "train-lstm.log").read_text(), max_points=10)
    assert len(history["train"]) == 10
    assert history["train_points"] == 56
    assert (history["train"][0][0], history["train"][-1][0]) == (5, 280)
    assert len(history["val"]) == 6
