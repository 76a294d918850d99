"""The char-rnn image's entry point: options from arguments and environment, the launcher's config, sampling."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[3]
_spec = importlib.util.spec_from_file_location(
    "char_rnn_entrypoint", REPO / "roles" / "char_rnn_image" / "files" / "char_rnn_entrypoint.py"
)
entry = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(entry)
FIXTURES = REPO / "tests" / "fixtures" / "char-rnn"


def base(volume: str = "/data", char_rnn_dir: str = "/opt/rnn-karpathy") -> dict[str, Any]:
    """What roles/char_rnn_image/tasks/install.yml writes (numbers as a template may leave them: text)."""
    return {
        "run": "default",
        "dataset": "tinyshakespeare",
        "char_rnn_dir": char_rnn_dir,
        "th": "/usr/local/bin/th",
        "log_path": "/data/log/default.log",
        "state_path": "/data/state/default.state.json",
        "checkpoint_path": "/data/cv/default",
        "unit": "char-rnn-train-default.service",
        "threads": "probe",
        "keep_checkpoints": 0,
        "min_free_mb": 0,
        "environment": {},
        "volume": volume,
        "libexec_dir": str(REPO / "plugins" / "module_utils"),
        "python": "/usr/bin/python3",
        "options": {
            "data_dir": "data/tinyshakespeare", "rnn_size": "128", "num_layers": 2, "model": "lstm",
            "learning_rate": 0.002, "learning_rate_decay": 0.97, "learning_rate_decay_after": 10, "decay_rate": 0.95,
            "dropout": "0.0", "seq_length": 50, "batch_size": 50, "max_epochs": 50, "grad_clip": 5, "train_frac": 0.95,
            "val_frac": 0.05, "seed": 123, "print_every": 1, "eval_val_every": 1000, "checkpoint_dir": "cv/default",
            "savefile": "default", "gpuid": -1,
        },
    }  # fmt: skip


@pytest.mark.parametrize(
    "args",
    [
        ["-rnn_size", "256", "-dropout", "0.5"],
        ["--rnn_size", "256", "--dropout=0.5"],
        ["--rnn-size=256", "-dropout", "0.5"],
    ],
)
def test_option_forms(args: list[str]) -> None:
    assert entry.parse_args(args) == {"rnn_size": "256", "dropout": "0.5"}


@pytest.mark.parametrize(("args", "message"), [(["256"], "expected an option"), (["-rnn_size"], "needs a value")])
def test_bad_option_forms(args: list[str], message: str) -> None:
    with pytest.raises(entry.UsageError, match=message):
        entry.parse_args(args)


def test_arguments_beat_environment_beat_defaults() -> None:
    names = [n for n in base()["options"] if n not in entry.DERIVED] + list(entry.SETTINGS)
    env = {"CHARRNN_RNN_SIZE": "64", "CHARRNN_NUM_LAYERS": "3", "CHARRNN_RUN": "shake", "PATH": "/bin"}
    given = {**entry.environment_values(names, env), **entry.parse_args(["-rnn_size", "32"])}
    config = entry.run_config(base(), given, "/data")
    options = config["options"]
    assert (options["rnn_size"], options["num_layers"], options["seq_length"]) == (32, 3, 50)
    assert options["dropout"] == 0.0 and isinstance(options["dropout"], float)
    # where things go follows the run and the data set, in the volume
    assert options["checkpoint_dir"] == "/data/cv/shake" and options["savefile"] == "shake"
    assert options["data_dir"] == "/data/corpus/tinyshakespeare"
    assert config["state_path"] == "/data/state/shake.state.json" and config["log_path"] == "/data/log/shake.log"
    assert config["checkpoint_path"] == "/data/cv/shake"


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"rnn_sise": "3"}, r"unknown option\(s\) -rnn_sise; allowed: .*rnn_size"),
        ({"checkpoint_dir": "/x"}, r"unknown option\(s\) -checkpoint_dir"),
        ({"rnn_size": "big"}, r"-rnn_size must be a whole number, not 'big'"),
        ({"rnn_size": "1.5"}, r"-rnn_size must be a whole number, not '1.5'"),
        ({"max_epochs": "x"}, r"-max_epochs must be a number, not 'x'"),
        ({"rnn_size": "0"}, r"-rnn_size must be 1 or more"),
        ({"dropout": "1"}, r"-dropout must be in \[0, 1\)"),
        ({"model": "transformer"}, "-model must be lstm, gru or rnn"),
        ({"run": "../etc"}, "-run must be a plain name"),
        ({"threads": "fast"}, "-threads must be probe, auto or a JSON object"),
    ],
)
def test_bad_values_are_refused(given: dict[str, str], message: str) -> None:
    with pytest.raises(entry.UsageError, match=message):
        entry.run_config(base(), given, "/data")


def test_threads_as_json() -> None:
    config = entry.run_config(base(), {"threads": '{"omp": 1}'}, "/data")
    assert config["threads"] == {"omp": 1}


def test_corpus_seeded_from_char_rnn_once(tmp_path: Path) -> None:
    source = tmp_path / "char-rnn" / "data" / "tinyshakespeare"
    source.mkdir(parents=True)
    (source / "input.txt").write_text("First Citizen:\n")
    config = entry.run_config(base(str(tmp_path / "vol"), str(tmp_path / "char-rnn")), {}, str(tmp_path / "vol"))
    entry.seed_corpus(config)
    target = tmp_path / "vol" / "corpus" / "tinyshakespeare" / "input.txt"
    assert target.read_text() == "First Citizen:\n"
    target.write_text("my own corpus\n")
    entry.seed_corpus(config)  # never overwritten
    assert target.read_text() == "my own corpus\n"
    missing = entry.run_config(
        base(str(tmp_path / "vol"), str(tmp_path / "char-rnn")), {"dataset": "mine"}, str(tmp_path / "vol")
    )
    with pytest.raises(entry.UsageError, match=r"no corpus: put the text in .*/corpus/mine/input.txt"):
        entry.seed_corpus(missing)


def test_sample_picks_best_and_latest(tmp_path: Path) -> None:
    volume = tmp_path / "vol"
    checkpoints = volume / "cv" / "tiny"
    checkpoints.mkdir(parents=True)
    for name in ("lm_tiny_epoch0.35_3.3196.t7", "lm_tiny_epoch2.00_3.1596.t7", "lm_tiny_epoch1.06_3.2739.t7"):
        shutil.copy(FIXTURES / name, checkpoints / name)  # the newest copy is epoch 1.06
    config = entry.run_config(base(str(volume)), {"run": "tiny"}, str(volume))
    libexec = str(REPO / "plugins" / "module_utils")
    assert Path(entry.pick_checkpoint("best", config, libexec)).name == "lm_tiny_epoch2.00_3.1596.t7"
    latest = Path(entry.pick_checkpoint("latest", config, libexec)).name
    assert latest in {"lm_tiny_epoch1.06_3.2739.t7", "lm_tiny_epoch2.00_3.1596.t7"}
    with pytest.raises(entry.UsageError, match="best, latest or an absolute path"):
        entry.pick_checkpoint("newest", config, libexec)
    empty = entry.run_config(base(str(volume)), {"run": "none"}, str(volume))
    with pytest.raises(entry.UsageError, match=r"no checkpoints of run 'none'.*train first"):
        entry.pick_checkpoint("best", empty, libexec)


def test_train_writes_the_config_and_execs_the_launcher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    volume = tmp_path / "vol"
    source = tmp_path / "char-rnn" / "data" / "tinyshakespeare"
    source.mkdir(parents=True)
    (source / "input.txt").write_text("x" * 1000)
    calls: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(entry.os, "execv", lambda path, argv: calls.append((path, argv)))
    defaults = base(str(volume), str(tmp_path / "char-rnn"))
    assert entry.train(["-max_epochs", "0.5"], {"CHARRNN_RUN": "r1"}, defaults) == 0
    path = volume / "run" / "r1.json"
    written = json.loads(path.read_text())
    assert written["options"]["max_epochs"] == 0.5 and written["run"] == "r1"
    assert calls == [
        ("/usr/bin/python3", ["/usr/bin/python3", f"{defaults['libexec_dir']}/char_rnn_launcher.py", str(path)])
    ]


def test_help_and_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert entry.main(["char-rnn", "help"]) == 0
    assert "char-rnn train" in capsys.readouterr().out
    assert entry.main(["char-rnn", "fly"]) == 2
