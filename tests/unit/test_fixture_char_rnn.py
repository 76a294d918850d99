"""The fixture char-rnn (tests/fixtures/upstream/karpathy/char-rnn) run under LuaJIT.

Its output must parse like the real train.lua's, and its checkpoints must be real torch7 files
that torchfile loads and checkpoint_info accepts.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils import char_rnn_log, checkpoints

LUAJIT = shutil.which("luajit")
pytestmark = pytest.mark.skipif(LUAJIT is None, reason="luajit is not installed (apt-get install luajit)")

# the real line formats, whole lines, Torch's trailing tab included
PROGRESS_LINE = re.compile(
    r"^\d+/\d+ \(epoch \d+\.\d{3}\), train_loss = \d+\.\d{8}, "
    r"grad/param norm = \d\.\d{4}e[-+]\d\d, time/batch = \d+\.\d{4}s\t$"
)
SAVING_LINE = re.compile(r"^saving checkpoint to cv/lm_[\w.-]+_epoch\d+\.\d\d_\d+\.\d{4}\.t7\t$")
SMALL = ["-gpuid", "-1", "-rnn_size", "16", "-num_layers", "1", "-seq_length", "20", "-batch_size", "10"]


@pytest.fixture
def charrnn(upstream: Path, tmp_path: Path) -> Path:
    """A writable copy of the fixture, like the checkout a role would make."""
    dest = tmp_path / "char-rnn"
    shutil.copytree(upstream, dest)
    return dest


def lua(charrnn: Path, script: str, *args: str, seconds_per_batch: str = "0") -> subprocess.CompletedProcess:
    env = dict(os.environ, FIXTURE_SECONDS_PER_BATCH=seconds_per_batch)
    return subprocess.run(
        [LUAJIT, script, *args], cwd=charrnn, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_input_text_is_generated_and_sized(upstream: Path) -> None:
    script = upstream / "data" / "tinyshakespeare" / "make_input.py"
    spec = importlib.util.spec_from_file_location("make_input", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = (upstream / "data" / "tinyshakespeare" / "input.txt").read_text(encoding="ascii")
    assert module.play() == text
    assert 30_000 <= len(text) <= 60_000


def test_train_prints_the_real_formats_and_writes_loadable_checkpoints(charrnn: Path) -> None:
    torchfile = pytest.importorskip("torchfile")
    proc = lua(charrnn, "train.lua", *SMALL, "-max_epochs", "1", "-eval_val_every", "50", "-print_every", "5")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[:2] == [
        "vocab.t7 and data.t7 do not exist. Running preprocessing...\t",
        "one-time setup: preprocessing input text file data/tinyshakespeare/input.txt...\t",
    ]
    assert "data load done. Number of data batches in train: 190, val: 10, test: 0\t" in lines
    assert "creating an lstm with 1 layers\t" in lines
    progress = [line for line in lines if "train_loss" in line]
    assert progress and all(PROGRESS_LINE.match(line) for line in progress)
    saving = [line for line in lines if line.startswith("saving checkpoint")]
    assert len(saving) == 4 and all(SAVING_LINE.match(line) for line in saving)

    summary = char_rnn_log.parse_text(proc.stdout)
    assert (summary["iteration"], summary["total_iterations"], summary["finished"]) == (190, 190, True)
    assert (summary["model"], summary["num_layers"], summary["vocab_size"]) == ("lstm", 1, 52)
    assert summary["num_parameters"] == (52 + 1) * 64 + 17 * 64 + 17 * 52  # char-rnn's LSTM formula

    found = checkpoints.discover(str(charrnn / "cv"), "lstm", torchfile)
    assert found["count"] == found["valid_count"] == 4
    latest = found["latest"]
    assert Path(latest["path"]).name == summary["last_checkpoint"].removeprefix("cv/")
    assert (latest["iteration"], latest["file_epoch"], latest["epoch"]) == (190, 1, 1.0)
    assert list(latest["val_losses"]) == [50, 100, 150, 190]
    data = torchfile.load(latest["path"])
    assert {b"i", b"epoch", b"val_loss", b"val_losses", b"train_losses", b"opt", b"vocab"} <= set(data)
    assert len(data[b"train_losses"]) == 190
    assert data[b"protos"][b"rnn"].shape == (summary["num_parameters"],)
    assert torchfile.load(str(charrnn / "data" / "tinyshakespeare" / "vocab.t7"))[b"a"] > 0
    assert torchfile.load(str(charrnn / "data" / "tinyshakespeare" / "data.t7")).shape == (40123,)


def test_opt_keys_match_the_real_train_lua(charrnn: Path, real: Path) -> None:
    torchfile = pytest.importorskip("torchfile")
    proc = lua(charrnn, "train.lua", *SMALL, "-max_epochs", "0.1", "-model", "gru", "-savefile", "g")
    assert proc.returncode == 0, proc.stderr
    ours = torchfile.load(str(next((charrnn / "cv").glob("lm_g_*.t7"))))[b"opt"]
    theirs = torchfile.load(str(real / "lm_tinygru_epoch1.00_3.1838.t7"))[b"opt"]
    assert set(ours) == set(theirs)
    assert ours[b"model"] == b"gru"


def test_init_from_resumes_with_counter_at_one(charrnn: Path) -> None:
    first = lua(charrnn, "train.lua", *SMALL, "-max_epochs", "0.5", "-model", "gru", "-num_layers", "2")
    assert first.returncode == 0, first.stderr
    checkpoint = next((charrnn / "cv").glob("lm_lstm_epoch0.50_*.t7"))
    second = lua(charrnn, "train.lua", *SMALL, "-max_epochs", "0.2", "-init_from", f"cv/{checkpoint.name}")
    assert second.returncode == 0, second.stderr
    assert f"loading a model from checkpoint cv/{checkpoint.name}\t" in second.stdout
    assert "overwriting rnn_size=16, num_layers=2, model=gru based on the checkpoint.\t" in second.stdout
    assert "creating an" not in second.stdout
    assert second.stdout.splitlines()[second.stdout.splitlines().index("cloning criterion\t") + 1].startswith("1/38 ")
    summary = char_rnn_log.parse_text(first.stdout + second.stdout)
    assert (summary["segments"], summary["restarts"], summary["iteration"]) == (2, 1, 38)
    assert summary["init_from"] == f"cv/{checkpoint.name}"


def test_init_from_a_truncated_checkpoint_fails(charrnn: Path, real: Path) -> None:
    (charrnn / "cv").mkdir()
    (charrnn / "cv" / "cut.t7").write_bytes((real / "lm_tinygru_epoch1.00_3.1838.t7").read_bytes()[:5000])
    proc = lua(charrnn, "train.lua", *SMALL, "-init_from", "cv/cut.t7")
    assert proc.returncode == 1
    assert "read error: read 0 blocks instead of 1" in proc.stderr
    assert char_rnn_log.parse_text(proc.stdout + proc.stderr)["errors"][0].endswith(
        "read error: read 0 blocks instead of 1"
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["-model", "cnn"], "unknown -model cnn"),
        (["-batch_size", "200", "-seq_length", "200"], "need at least 1 of each"),
        (["-data_dir", "data/nowhere"], "cannot open data/nowhere/input.txt"),
        (["-threads", "4"], "invalid argument: -threads"),
        (["-rnn_size", "big"], "number expected"),
    ],
)
def test_train_validates(charrnn: Path, args: list[str], needle: str) -> None:
    proc = lua(charrnn, "train.lua", "-gpuid", "-1", *args)
    assert proc.returncode != 0
    assert needle in proc.stderr


def test_train_can_be_watched_and_killed(charrnn: Path) -> None:
    """Line-buffered output and a sleep per batch: a service shows progress while it runs."""
    env = dict(os.environ, FIXTURE_SECONDS_PER_BATCH="0.02")
    args = [LUAJIT, "train.lua", *SMALL, "-print_every", "1", "-eval_val_every", "10"]
    with subprocess.Popen(args, cwd=charrnn, env=env, stdout=subprocess.PIPE, text=True) as proc:
        started = time.monotonic()
        line = ""
        while "train_loss" not in line:
            line = proc.stdout.readline()
            assert line, "train.lua exited early"
        proc.kill()
    assert time.monotonic() - started < 10
    assert PROGRESS_LINE.match(line.rstrip("\n"))
    assert float(line.split("time/batch = ")[1].rstrip("s\t\n")) >= 0.015
    assert line.startswith("1/9500 (epoch 0.005)")


def test_default_gpuid_falls_back_to_cpu(charrnn: Path) -> None:
    proc = lua(charrnn, "train.lua", "-max_epochs", "0.01", "-rnn_size", "8", "-num_layers", "1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("package cunn not found!\t\npackage cutorch not found!\t\n")
    assert "Falling back on CPU mode\t\n" in proc.stdout


@pytest.fixture
def trained(charrnn: Path) -> Path:
    proc = lua(charrnn, "train.lua", *SMALL, "-max_epochs", "0.1", "-model", "gru")
    assert proc.returncode == 0, proc.stderr
    return next((charrnn / "cv").glob("*.t7"))


def test_sample(charrnn: Path, trained: Path) -> None:
    proc = lua(charrnn, "sample.lua", f"cv/{trained.name}", "-gpuid", "-1", "-length", "200", "-seed", "7")
    assert proc.returncode == 0, proc.stderr
    header = "creating an gru...\t\nmissing seed text, using uniform probability over first character\t\n"
    assert proc.stdout.startswith(header + "--------------------------\t\n")
    body = proc.stdout[len(header) + 28 :]
    assert len(body) == 201 and body.endswith("\n")
    vocab = set((charrnn / "data" / "tinyshakespeare" / "input.txt").read_text())
    assert set(body[:-1]) <= vocab
    again = lua(charrnn, "sample.lua", f"cv/{trained.name}", "-gpuid", "-1", "-length", "200", "-seed", "7")
    assert again.stdout == proc.stdout


def test_sample_primetext_quiet(charrnn: Path, trained: Path) -> None:
    proc = lua(
        charrnn, "sample.lua", str(trained), "-gpuid", "-1", "-length", "10", "-primetext", "The ", "-verbose", "0"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("The ") and len(proc.stdout) == 15


def test_sample_reads_a_real_checkpoint(charrnn: Path, real: Path) -> None:
    proc = lua(charrnn, "sample.lua", str(real / "lm_tinygru_epoch1.00_3.1838.t7"), "-gpuid", "-1", "-length", "50")
    assert proc.returncode == 0, proc.stderr
    # the real sample.log starts the same way
    assert proc.stdout.splitlines()[:3] == (real / "sample.log").read_text().splitlines()[:3]


@pytest.mark.parametrize("damage", ["missing", "empty", "truncated", "folder"])
def test_sample_bad_checkpoint(charrnn: Path, trained: Path, damage: str) -> None:
    target = charrnn / "cv" / "bad.t7"
    if damage == "empty":
        target.write_bytes(b"")
    elif damage == "truncated":
        target.write_bytes(trained.read_bytes()[: trained.stat().st_size // 2])
    elif damage == "folder":
        target = charrnn / "cv"
    proc = lua(charrnn, "sample.lua", str(target), "-gpuid", "-1")
    assert proc.returncode == 1
    assert "read error: read 0 blocks instead of 1" in proc.stderr
    if damage == "missing":
        assert "Are you sure you didn't forget to prepend cv/ ?" in proc.stdout
