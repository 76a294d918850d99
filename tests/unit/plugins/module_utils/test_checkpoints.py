"""plugins/module_utils/checkpoints.py against the real char-rnn checkpoints."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils import checkpoints as ck

LSTM = ("lm_tiny_epoch0.35_3.3196.t7", "lm_tiny_epoch1.06_3.2739.t7", "lm_tiny_epoch2.00_3.1596.t7")
GRU = "lm_tinygru_epoch1.00_3.1838.t7"
T0 = 1_700_000_000.0


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("lm_tiny_epoch2.00_3.1596.t7", {"savefile": "tiny", "epoch": 2.0, "val_loss": 3.1596}),
        ("lm_tinygru_epoch1.00_3.1838.t7", {"savefile": "tinygru", "epoch": 1.0, "val_loss": 3.1838}),
        ("lm_lstm_epoch10.00_1.3921.t7", {"savefile": "lstm", "epoch": 10.0, "val_loss": 1.3921}),
        ("lm_my_run_v2_epoch0.35_3.3196.t7", {"savefile": "my_run_v2", "epoch": 0.35, "val_loss": 3.3196}),
        ("lm_a_epoch1_b_epoch9.00_1.0000.t7", {"savefile": "a_epoch1_b", "epoch": 9.0, "val_loss": 1.0}),
        ("lm_x_epoch50.00_12.3456.t7", {"savefile": "x", "epoch": 50.0, "val_loss": 12.3456}),
        ("lm_tiny.t7", None),
        ("tiny_epoch1.00_3.0000.t7", None),
        ("lm_tiny_epoch1.00_3.1596.t7.part", None),
        ("lm__epoch1.00_3.1596.t7", None),
    ],
)
def test_parse_name(name: str, expected: dict | None) -> None:
    assert ck.parse_name(name) == expected


def test_parse_name_nan_loss() -> None:
    parsed = ck.parse_name("lm_tiny_epoch1.00_nan.t7")
    assert parsed is not None
    assert parsed["savefile"] == "tiny"
    assert math.isnan(parsed["val_loss"])


def test_one_name_rule_for_every_parser() -> None:
    """The log's "saving checkpoint to" pattern takes its name part from checkpoints.NAME_PATTERN."""
    from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils import char_rnn_log

    assert ck.NAME_PATTERN in char_rnn_log.CHECKPOINT_RE.pattern
    line = "saving checkpoint to cv/run/lm_my_run_epoch0.11_-nan.t7\t"
    match = char_rnn_log.CHECKPOINT_RE.search(line)
    assert match is not None and match.group("path") == "cv/run/lm_my_run_epoch0.11_-nan.t7"
    assert match.group("savefile") == "my_run" and match.group("epoch") == "0.11"
    assert ck.parse_name("lm_my_run_epoch0.11_-nan.t7")["savefile"] == "my_run"
    assert char_rnn_log.CHECKPOINT_RE.search("saving checkpoint to cv/lm_tiny.t7") is None


@pytest.mark.parametrize(
    ("epoch", "ntrain", "eval_val_every", "segment_total", "after", "expected"),
    [
        pytest.param(0.47, 423, 200, None, 0, 200, id="snaps-to-the-eval-point"),  # 198.8 iterations by the name
        pytest.param(0.25, 423, 50, 105, 0, 105, id="the-segment's-final-checkpoint"),
        pytest.param(0.11, 190, 20, 38, 0, 20, id="fixture-run-first-checkpoint"),
        pytest.param(0.20, 190, 20, 38, 0, 38, id="fixture-run-final-checkpoint"),
        pytest.param(0.50, 100, 0, None, 0, 50, id="no-eval-points-known"),
        pytest.param(0.0, 100, 0, None, 0, 1, id="never-before-iteration-1"),
        pytest.param(0.50, 100, 0, None, 60, 61, id="after-the-last-progress-line"),
        pytest.param(0.50, 100, 50, None, 50, 51, id="eval-point-not-after-the-last-line"),
    ],
)
def test_checkpoint_iteration(epoch, ntrain, eval_val_every, segment_total, after, expected) -> None:
    assert ck.checkpoint_iteration(epoch, ntrain, eval_val_every, segment_total, after) == expected


@pytest.mark.parametrize("name", [*LSTM, GRU])
def test_real_checkpoints_are_complete(real: Path, name: str) -> None:
    assert ck.check_t7(str(real / name)) is None


@pytest.mark.parametrize("name", [LSTM[2], GRU])
@pytest.mark.parametrize("cut", [1, 4, 5, 12, 100, 1000, 0.25, 0.5, 0.9, -8, -1])
def test_truncated_copies_are_invalid(real: Path, tmp_path: Path, copy_as, name: str, cut: float) -> None:
    size = (real / name).stat().st_size
    keep = int(size * cut) if isinstance(cut, float) else (size + cut if cut < 0 else cut)
    path = copy_as(real / name, tmp_path, name, size=keep)
    reason = ck.check_t7(str(path))
    assert reason is not None
    assert "cut short" in reason or "does not fit" in reason


def test_empty_file_is_invalid(tmp_path: Path) -> None:
    path = tmp_path / "lm_tiny_epoch1.00_3.0000.t7"
    path.write_bytes(b"")
    assert ck.check_t7(str(path)) == "empty file"
    entry = ck.describe(str(path))
    assert entry["valid"] is False
    assert entry["invalid_reason"] == "empty file"
    assert entry["size"] == 0


@pytest.mark.parametrize("content", [b"not a torch file at all\n", b"\x09\x00\x00\x00\x01\x00\x00\x00"])
def test_garbage_is_invalid(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "lm_tiny_epoch1.00_3.0000.t7"
    path.write_bytes(content)
    assert ck.check_t7(str(path)) is not None


@pytest.mark.parametrize(
    ("name", "iteration", "file_epoch", "val_loss", "model", "num_layers", "val_loss_iterations"),
    [
        (LSTM[0], 50, 50 / 142, 3.3196, "lstm", 1, [50]),
        (LSTM[2], 284, 2, 3.1596, "lstm", 1, [50, 100, 150, 200, 250, 284]),
        (GRU, 142, 1, 3.1838, "gru", 2, [60, 120, 142]),
    ],
)
def test_read_contents_with_torchfile(
    real: Path,
    torchfile,
    name: str,
    iteration: int,
    file_epoch: float,
    val_loss: float,
    model: str,
    num_layers: int,
    val_loss_iterations: list[int],
) -> None:
    entry = ck.describe(str(real / name), torchfile)
    assert entry["valid"] is True
    assert entry["read"] is True
    assert entry["iteration"] == iteration
    assert entry["file_epoch"] == pytest.approx(file_epoch)
    assert round(entry["file_val_loss"], 4) == val_loss == entry["val_loss"]
    assert list(entry["val_losses"]) == val_loss_iterations
    assert entry["val_losses"][iteration] == entry["file_val_loss"]
    assert entry["vocab_size"] == 58
    opt = entry["opt"]
    assert (opt["model"], opt["num_layers"], opt["rnn_size"]) == (model, num_layers, 16)
    assert (opt["seq_length"], opt["batch_size"], opt["gpuid"]) == (20, 10, -1)
    assert opt["savefile"] == entry["savefile"]
    assert all(isinstance(k, str) for k in opt)
    assert not any(isinstance(v, bytes) for v in opt.values())


def test_without_torchfile_only_the_name_is_parsed(real: Path) -> None:
    entry = ck.describe(str(real / GRU), None)
    assert entry["valid"] is True
    assert entry["read"] is False
    assert "iteration" not in entry
    assert (entry["savefile"], entry["epoch"], entry["val_loss"]) == ("tinygru", 1.0, 3.1838)
    assert entry["size"] == 200750


class BrokenTorchfile:
    @staticmethod
    def load(path: str) -> None:
        raise ValueError("unknown object type / typeidx: 42")


class ListTorchfile:
    @staticmethod
    def load(path: str) -> list:
        return [1, 2, 3]


@pytest.mark.parametrize(("reader", "needle"), [(BrokenTorchfile, "typeidx: 42"), (ListTorchfile, "not a table")])
def test_torchfile_load_failure_marks_invalid(real: Path, reader: type, needle: str) -> None:
    entry = ck.describe(str(real / GRU), reader)
    assert entry["valid"] is False
    assert entry["invalid_reason"].startswith("torchfile could not load it")
    assert needle in entry["invalid_reason"]


def test_truncated_file_is_not_handed_to_torchfile(real: Path, tmp_path: Path, copy_as) -> None:
    path = copy_as(real / GRU, tmp_path, GRU, size=150_000)
    entry = ck.describe(str(path), BrokenTorchfile)
    assert entry["valid"] is False
    assert "cut short" in entry["invalid_reason"]


def test_discover_real_lstm_run(real: Path, torchfile) -> None:
    result = ck.discover(str(real), "tiny", torchfile)
    assert [e["name"] for e in result["checkpoints"]] == list(LSTM)
    assert result["count"] == result["valid_count"] == 3
    assert result["invalid"] == []
    assert result["best"]["name"] == "lm_tiny_epoch2.00_3.1596.t7"
    assert result["best"]["iteration"] == 284


def test_savefile_filter(real: Path) -> None:
    assert [e["name"] for e in ck.discover(str(real), "tinygru")["checkpoints"]] == [GRU]
    assert ck.discover(str(real), "tin")["count"] == 0
    assert ck.discover(str(real))["count"] == 4


def test_names_do_not_sort_by_recency(real: Path, tmp_path: Path, copy_as) -> None:
    """epoch10 sorts before epoch9 by name; the newer file is the latest all the same."""
    copy_as(real / LSTM[1], tmp_path, "lm_run_epoch9.00_1.4000.t7", mtime=T0)
    copy_as(real / LSTM[2], tmp_path, "lm_run_epoch10.00_1.5000.t7", mtime=T0 + 60)
    result = ck.discover(str(tmp_path), "run")
    assert [e["name"] for e in result["checkpoints"]] == ["lm_run_epoch10.00_1.5000.t7", "lm_run_epoch9.00_1.4000.t7"]
    assert result["latest"]["name"] == "lm_run_epoch10.00_1.5000.t7"
    assert result["best"]["name"] == "lm_run_epoch9.00_1.4000.t7"


def test_equal_mtimes_without_contents_fall_back_to_epoch(real: Path, tmp_path: Path, copy_as) -> None:
    copy_as(real / LSTM[2], tmp_path, "lm_run_epoch9.00_3.0000.t7", mtime=T0)
    copy_as(real / LSTM[0], tmp_path, "lm_run_epoch10.00_3.0000.t7", mtime=T0)
    assert ck.discover(str(tmp_path), "run")["latest"]["name"] == "lm_run_epoch10.00_3.0000.t7"


def test_equal_mtimes_are_broken_by_iteration(real: Path, tmp_path: Path, copy_as, torchfile) -> None:
    """Same mtime: the file saved at the later iteration (284, read from the file) wins over the name."""
    copy_as(real / LSTM[2], tmp_path, "lm_run_epoch9.00_3.0000.t7", mtime=T0)  # i = 284
    copy_as(real / LSTM[0], tmp_path, "lm_run_epoch10.00_3.0000.t7", mtime=T0)  # i = 50
    result = ck.discover(str(tmp_path), "run", torchfile)
    assert result["latest"]["name"] == "lm_run_epoch9.00_3.0000.t7"
    assert result["latest"]["iteration"] == 284
    # with contents read, best uses the exact loss stored in the file (3.1596 < 3.3196)
    assert result["best"]["name"] == "lm_run_epoch9.00_3.0000.t7"


@pytest.mark.parametrize("use_torchfile", [False, True])
def test_invalid_files_are_never_chosen(real: Path, tmp_path: Path, copy_as, use_torchfile: bool) -> None:
    reader = pytest.importorskip("torchfile") if use_torchfile else None
    copy_as(real / LSTM[1], tmp_path, LSTM[1], mtime=T0)
    # newest and lowest loss, but cut short while being written
    copy_as(real / LSTM[2], tmp_path, "lm_tiny_epoch3.00_0.1000.t7", mtime=T0 + 100, size=90_000)
    (tmp_path / "lm_tiny_epoch3.50_0.0500.t7").write_bytes(b"")
    result = ck.discover(str(tmp_path), "tiny", reader)
    assert result["count"] == 3
    assert result["valid_count"] == 1
    assert sorted(Path(p).name for p in result["invalid"]) == [
        "lm_tiny_epoch3.00_0.1000.t7",
        "lm_tiny_epoch3.50_0.0500.t7",
    ]
    assert result["latest"]["name"] == result["best"]["name"] == LSTM[1]


def test_nothing_valid_gives_null_latest_and_best(tmp_path: Path) -> None:
    (tmp_path / "lm_tiny_epoch1.00_1.0000.t7").write_bytes(b"")
    result = ck.discover(str(tmp_path))
    assert (result["latest"], result["best"], result["count"]) == (None, None, 1)


def test_unparsed_names_are_listed(real: Path, tmp_path: Path, copy_as) -> None:
    copy_as(real / GRU, tmp_path, "lm_handmade.t7")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "lm_dir.t7").mkdir()
    result = ck.discover(str(tmp_path))
    assert [e["name"] for e in result["checkpoints"]] == ["lm_handmade.t7"]
    entry = result["checkpoints"][0]
    assert (entry["savefile"], entry["epoch"], entry["val_loss"], entry["valid"]) == (None, None, None, True)
    assert result["best"] is None  # no loss known
    assert result["latest"]["name"] == "lm_handmade.t7"


def test_walker_seeks_over_storages(tmp_path: Path) -> None:
    """A hand-written torch7 file: table {w = FloatTensor(3)} followed by a back-reference."""
    import struct

    def s(text: bytes) -> bytes:
        return struct.pack("<i", len(text)) + text

    storage = struct.pack("<ii", 4, 3) + s(b"V 1") + s(b"torch.FloatStorage") + struct.pack("<q", 3) + b"\0" * 12
    tensor = struct.pack("<ii", 4, 2) + s(b"V 1") + s(b"torch.FloatTensor") + struct.pack("<i", 1)
    tensor += struct.pack("<qqq", 3, 1, 1) + storage
    body = struct.pack("<iii", 3, 1, 2) + struct.pack("<i", 2) + s(b"w") + tensor
    body += struct.pack("<i", 2) + s(b"again") + struct.pack("<ii", 4, 2)
    path = tmp_path / "lm_hand_epoch1.00_1.0000.t7"
    path.write_bytes(body)
    assert ck.check_t7(str(path)) is None
    path.write_bytes(body[:-20])
    assert "cut short" in ck.check_t7(str(path))
    try:
        import torchfile
    except ImportError:
        return
    path.write_bytes(body)
    assert torchfile.load(str(path))[b"w"].shape == (3,)


def number_table_file(path: Path, entries: int, tail: bytes = b"") -> bytes:
    """{train_losses = {1.0, 2.0, ...}, i = entries} the way torch7 writes it."""
    import struct

    def s(text: bytes) -> bytes:
        return struct.pack("<i", len(text)) + text

    body = struct.pack("<iii", 3, 1, 2) + struct.pack("<i", 2) + s(b"train_losses")
    body += struct.pack("<iii", 3, 2, entries)
    body += b"".join(struct.pack("<idid", 1, float(n + 1), 1, 3.0 - n / entries) for n in range(entries)) + tail
    body += struct.pack("<i", 2) + s(b"i") + struct.pack("<id", 1, float(entries))
    path.write_bytes(body)
    return body


@pytest.mark.parametrize("cut", [None, 0.3, 0.7, -5])
def test_long_loss_tables(tmp_path: Path, cut: float | None) -> None:
    """A long run's train_losses (one number -> number entry per iteration) is checked in bulk."""
    path = tmp_path / "lm_long_epoch50.00_1.2000.t7"
    body = number_table_file(path, 50_000)
    if cut is not None:
        path.write_bytes(body[: int(len(body) * cut) if cut > 0 else cut])
        assert "cut short" in ck.check_t7(str(path))
    else:
        assert ck.check_t7(str(path)) is None


def test_mixed_table_after_numbers(tmp_path: Path) -> None:
    """Number entries followed by a string-keyed one: the bulk skip stops and the walk goes on."""
    import struct

    path = tmp_path / "lm_mixed_epoch1.00_1.0000.t7"
    entries = 40
    body = struct.pack("<iii", 3, 1, entries + 1)
    body += b"".join(struct.pack("<idid", 1, float(n + 1), 1, 0.5) for n in range(entries))
    body += struct.pack("<ii", 2, 1) + b"k" + struct.pack("<ii", 2, 2) + b"ok"
    path.write_bytes(body)
    assert ck.check_t7(str(path)) is None
    path.write_bytes(body[:-1])
    assert ck.check_t7(str(path)) is not None


def _run_dir(real: Path, tmp_path: Path, copy_as) -> dict[str, Path]:
    """Six checkpoints of one run, oldest first; the best (lowest val loss) is the second; one cut short."""
    files = {}
    for n, (name, size) in enumerate(
        [
            ("lm_run_epoch1.00_2.5000.t7", None),
            ("lm_run_epoch2.00_1.2000.t7", None),  # best
            ("lm_run_epoch3.00_1.9000.t7", None),
            ("lm_run_epoch4.00_1.8000.t7", 5000),  # cut short by a crash
            ("lm_run_epoch4.00_1.7000.t7", None),  # the resumed run's
            ("lm_run_epoch5.00_1.6000.t7", None),
        ]
    ):
        files[name] = copy_as(real / LSTM[n % 3], tmp_path, name, mtime=T0 + 60 * n, size=size)
    copy_as(real / LSTM[0], tmp_path, "lm_other_epoch1.00_0.1000.t7", mtime=T0)
    return files


@pytest.mark.parametrize(
    ("keep", "kept"),
    [
        (1, ["lm_run_epoch2.00_1.2000.t7", "lm_run_epoch5.00_1.6000.t7"]),
        (2, ["lm_run_epoch2.00_1.2000.t7", "lm_run_epoch4.00_1.7000.t7", "lm_run_epoch5.00_1.6000.t7"]),
        # the best is among the newest 4: 4 files, not 5
        (
            4,
            [
                "lm_run_epoch2.00_1.2000.t7",
                "lm_run_epoch3.00_1.9000.t7",
                "lm_run_epoch4.00_1.7000.t7",
                "lm_run_epoch5.00_1.6000.t7",
            ],
        ),
        (
            9,
            [
                "lm_run_epoch1.00_2.5000.t7",
                "lm_run_epoch2.00_1.2000.t7",
                "lm_run_epoch3.00_1.9000.t7",
                "lm_run_epoch4.00_1.7000.t7",
                "lm_run_epoch5.00_1.6000.t7",
            ],
        ),
    ],
)
def test_retention_keeps_the_best_and_the_newest_valid(
    real: Path, tmp_path: Path, copy_as, keep: int, kept: list[str]
) -> None:
    _run_dir(real, tmp_path, copy_as)
    entries = ck.discover(str(tmp_path), "run")["checkpoints"]
    plan = ck.retention(entries, keep)
    assert sorted(e["name"] for e in plan["keep"]) == kept
    removed = sorted(e["name"] for e in plan["remove"])
    assert "lm_run_epoch4.00_1.8000.t7" in removed  # invalid: never kept
    assert sorted(kept + removed) == sorted(e["name"] for e in entries)  # nothing of another savefile


def test_retention_zero_keeps_everything(real: Path, tmp_path: Path, copy_as) -> None:
    _run_dir(real, tmp_path, copy_as)
    entries = ck.discover(str(tmp_path), "run")["checkpoints"]
    assert ck.retention(entries, 0) == {"keep": entries, "remove": []}
    assert ck.retention([], 2) == {"keep": [], "remove": []}
