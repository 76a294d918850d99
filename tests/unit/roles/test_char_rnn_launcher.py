"""The char_rnn_train launcher end to end: its main over the FIXTURE train.lua (run under luajit).

The pieces it is made of have their own tests beside their module_utils (test_char_rnn_plan,
test_char_rnn_threads, test_char_rnn_supervisor, test_checkpoints). Here the launcher imports them
as it does on a host: plain modules from the folder it was copied to.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from run_config import run_config

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "plugins" / "module_utils"))  # the role copies them next to the launcher
_spec = importlib.util.spec_from_file_location(
    "char_rnn_launcher", REPO / "roles" / "char_rnn_train" / "files" / "char_rnn_launcher.py"
)
launcher = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(launcher)

import char_rnn_log  # noqa: E402 (the very modules the launcher imported)
import char_rnn_supervisor  # noqa: E402
import checkpoints  # noqa: E402


def test_launcher_imports_its_pieces_as_plain_modules():
    """On the host there is no ansible_collections: every piece must come from the launcher's folder."""
    for name in ("char_rnn_plan", "char_rnn_threads", "char_rnn_supervisor", "char_rnn_log", "checkpoints"):
        module = sys.modules[name]
        assert module.__file__ == str(REPO / "plugins" / "module_utils" / f"{name}.py")
    assert launcher.char_rnn_threads.char_rnn_log is char_rnn_log
    assert launcher.char_rnn_plan.checkpoints is checkpoints is launcher.checkpoints


def test_usage_and_missing_configuration(tmp_path: Path, capsys):
    assert launcher.main(["launcher"]) == 2
    assert launcher.main(["launcher", str(tmp_path / "none.json")]) == 2
    assert "no such run configuration" in capsys.readouterr().err


def _fixture_run(tmp_path: Path, upstream: Path, threads, max_epochs: float) -> Path:
    """A run configuration for the FIXTURE train.lua under luajit, in tmp_path."""
    luajit = os.environ.get("LUAJIT") or "/usr/bin/luajit"
    if not Path(luajit).exists():
        pytest.skip("luajit not installed")
    th = tmp_path / "th"
    th.write_text(f'#!/bin/sh\nexec {luajit} "$@"\n')
    th.chmod(0o755)
    (tmp_path / "data" / "tiny").mkdir(parents=True)
    (tmp_path / "data" / "tiny" / "input.txt").write_bytes((upstream / "data/tinyshakespeare/input.txt").read_bytes())
    for name in ("train.lua", "util"):
        os.symlink(upstream / name, tmp_path / name)
    cfg = run_config(max_epochs=max_epochs, eval_val_every=20)
    cfg.update(
        char_rnn_dir=str(tmp_path),
        th=str(th),
        log_path=str(tmp_path / "run.log"),
        state_path=str(tmp_path / "run.state.json"),
        threads=threads,
        environment={"FIXTURE_SECONDS_PER_BATCH": "0"},
    )
    path = tmp_path / "run.json"
    path.write_text(json.dumps(cfg))
    return path


def test_main_with_the_fixture_train_lua(tmp_path: Path, upstream: Path):
    """End to end with the FIXTURE train.lua under luajit: a fresh run, then a finished one."""
    path = _fixture_run(tmp_path, upstream, threads={"omp": 1}, max_epochs=0.2)
    assert launcher.main(["launcher", str(path)]) == 0
    log = (tmp_path / "run.log").read_text()
    assert "starting run run" in log and "saving checkpoint to" in log
    state = json.loads((tmp_path / "run.state.json").read_text())
    assert state["finished"] is True and len(state["segments"]) == 1
    assert launcher.main(["launcher", str(path)]) == 0
    assert "already finished" in (tmp_path / "run.log").read_text()


def test_probe_runs_once_per_run(tmp_path: Path, upstream: Path):
    """With threads=probe the first start times the candidates; a restart reuses the choice."""
    path = _fixture_run(tmp_path, upstream, threads="probe", max_epochs=0.1)
    assert launcher.main(["launcher", str(path)]) == 0
    log = (tmp_path / "run.log").read_text()
    assert log.count("char-rnn launcher:") and "probe OMP_NUM_THREADS=1" in log
    state = json.loads((tmp_path / "run.state.json").read_text())
    assert state["threads"]["setting"] == "probe" and state["threads"]["why"].startswith("probe of ")
    assert not (tmp_path / ".probe-run").exists()
    # more epochs: the run resumes, without probing again
    cfg = json.loads(path.read_text())
    cfg["options"]["max_epochs"] = 0.2
    path.write_text(json.dumps(cfg))
    assert launcher.main(["launcher", str(path)]) == 0
    log = (tmp_path / "run.log").read_text()
    assert log.count("probe OMP_NUM_THREADS=1") == 1
    assert "threads (probed earlier in this run)" in log


@pytest.mark.parametrize("late", [False, True], ids=["prompt-reader", "late-reader"])
def test_speed_watch_reprobes_and_resumes_the_run(tmp_path: Path, upstream: Path, monkeypatch, late: bool):
    """FIXTURE train.lua: the watch stops train.lua after a checkpoint, the launcher probes again and resumes.

    The fixture runs its 38 iterations in milliseconds and its whole output fits in the pipe, so it
    used to race the launcher: when the launcher read late (a busy host), train.lua had already
    saved its final checkpoint, the restart found the run finished, and nothing was probed again.
    FIXTURE_HOLD_AFTER=20 makes train.lua wait after the line the watch acts on, until it is
    stopped; ``late`` shows the outcome no longer depends on how fast the launcher reads.
    """
    probes = []

    def fake_probe(config, ntrain, cpus, say, batches=12):
        probes.append(config["run"])
        # first probe: a figure the fixture's time/batch is far from; second: none, so no watch
        return {"OMP_NUM_THREADS": str(len(probes))}, f"fake probe {len(probes)}", (1.0 if len(probes) == 1 else None)

    monkeypatch.setattr(launcher.char_rnn_threads, "probe_threads", fake_probe)
    monkeypatch.setattr(launcher.char_rnn_threads, "REPROBE_EVERY", -1e9)  # no waiting, whatever the clock does
    monkeypatch.setattr(launcher.char_rnn_threads, "WATCH_WINDOW", 5)
    if late:
        write = launcher.Tee.write

        def late_write(self, data: bytes) -> None:
            if data.startswith(b"loading data files"):
                time.sleep(0.5)  # train.lua meanwhile runs as far as it can
            write(self, data)

        monkeypatch.setattr(launcher.Tee, "write", late_write)
    path = _fixture_run(tmp_path, upstream, threads="probe", max_epochs=0.2)  # 38 iterations, checkpoints every 20
    cfg = json.loads(path.read_text())
    # the watch asks at the progress line of iteration 20 (after checkpoint 20); the resumed segment has 18
    cfg["environment"]["FIXTURE_HOLD_AFTER"] = "20"
    path.write_text(json.dumps(cfg))
    assert launcher.main(["launcher", str(path)]) == 0
    log = (tmp_path / "run.log").read_text()
    assert len(probes) == 2
    assert "over the last 5 batches: stopped train.lua to probe the thread settings again" in log
    assert "FIXTURE_HOLD_AFTER" not in log  # stopped while it waited
    assert "resuming run run from" in log and "at iteration 20/38" in log
    assert "threads (fake probe 2): OMP_NUM_THREADS=2" in log
    state = json.loads((tmp_path / "run.state.json").read_text())
    assert state["finished"] is True and len(state["segments"]) == 2
    assert [s["offset_iterations"] for s in state["segments"]] == [0, 20]
    assert "reprobe" not in state["threads"] and state["threads"]["env"] == {"OMP_NUM_THREADS": "2"}


def test_systemctl_stop_is_a_clean_exit_and_not_the_end_of_the_run(tmp_path: Path, upstream: Path):
    path = _fixture_run(tmp_path, upstream, threads={"omp": 1}, max_epochs=5.0)
    cfg = json.loads(path.read_text())
    cfg["environment"] = {"FIXTURE_SECONDS_PER_BATCH": "0.05"}
    path.write_text(json.dumps(cfg))
    env = {**os.environ, "PYTHONPATH": str(REPO / "plugins" / "module_utils")}
    script = REPO / "roles" / "char_rnn_train" / "files" / "char_rnn_launcher.py"
    proc = subprocess.Popen([sys.executable, str(script), str(path)], env=env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while "time/batch" not in ((tmp_path / "run.log").read_text() if (tmp_path / "run.log").exists() else ""):
        assert time.monotonic() < deadline, "train.lua never printed progress"
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    state = json.loads((tmp_path / "run.state.json").read_text())
    assert state["finished"] is False
    assert "stopped by signal 15" in (tmp_path / "run.log").read_text()


def _saved_checkpoints(log: str) -> list[str]:
    return [Path(m.group("path")).name for m in char_rnn_log.CHECKPOINT_RE.finditer(log)]


def test_keep_checkpoints_while_training(tmp_path: Path, upstream: Path):
    """FIXTURE train.lua: with keep_checkpoints 2, the best and the newest 2 of its checkpoints stay."""
    path = _fixture_run(tmp_path, upstream, threads={"omp": 1}, max_epochs=1.0)
    cfg = json.loads(path.read_text())
    cfg["keep_checkpoints"] = 2
    path.write_text(json.dumps(cfg))
    assert launcher.main(["launcher", str(path)]) == 0
    log = (tmp_path / "run.log").read_text()
    written = _saved_checkpoints(log)
    assert len(written) >= 5, written
    best = min(written, key=lambda name: checkpoints.parse_name(name)["val_loss"])
    left = sorted(p.name for p in (tmp_path / "cv" / "run").glob("lm_*.t7"))
    assert left == sorted({*written[-2:], best})
    assert log.count("removed checkpoint") == len(written) - len(left)


def test_min_free_mb_stops_the_run_cleanly_and_a_start_resumes(tmp_path: Path, upstream: Path, monkeypatch):
    """FIXTURE train.lua: space runs short after two checkpoints; the run stops before the third."""
    path = _fixture_run(tmp_path, upstream, threads={"omp": 1}, max_epochs=1.0)
    cfg = json.loads(path.read_text())
    # train.lua waits after iteration 60 (checkpoints 20, 40 and 60 written): whenever the launcher reads
    # the lines of checkpoint 60, it finds two complete ones, and train.lua cannot have run to its end
    cfg.update(min_free_mb=100, unit="char-rnn-train-run.service")
    cfg["environment"]["FIXTURE_HOLD_AFTER"] = "60"
    path.write_text(json.dumps(cfg))
    cv = tmp_path / "cv" / "run"
    free = {"mb": 1000}

    def fake_free(self):
        if sum(checkpoints.check_t7(str(p)) is None for p in cv.glob("lm_*.t7")) >= 2:
            free["mb"] = 100  # the floor exactly: no room for the next checkpoint
        return free["mb"] * char_rnn_supervisor.MB

    monkeypatch.setattr(launcher.DiskGuard, "free", fake_free)
    assert launcher.main(["launcher", str(path)]) == launcher.EXIT_LOW_DISK == 75
    log = (tmp_path / "run.log").read_text()
    # train.lua can be a little ahead of the launcher reading its output: checkpoint 60 may be there
    left = sorted(p.name for p in cv.glob("lm_*.t7"))
    assert [checkpoints.parse_name(name)["epoch"] for name in left] in ([0.11, 0.21], [0.11, 0.21, 0.32]), left
    assert all(checkpoints.check_t7(str(cv / name)) is None for name in left)  # none cut short
    assert "stopped train.lua before its next checkpoint: 100.0 MB free in" in log
    assert "run run stopped, low disk space" in log and "start char-rnn-train-run.service again" in log
    state = json.loads((tmp_path / "run.state.json").read_text())
    assert state["finished"] is False
    assert state["stopped"]["reason"].startswith("low disk space: 100.0 MB free in ")
    # still short: the launcher does not start train.lua at all
    assert launcher.main(["launcher", str(path)]) == 75
    assert len(json.loads((tmp_path / "run.state.json").read_text())["segments"]) == 1
    # space freed: it resumes from the newest checkpoint and the stop is forgotten
    monkeypatch.setattr(launcher.DiskGuard, "free", lambda self: 10**6 * char_rnn_supervisor.MB)
    del cfg["environment"]["FIXTURE_HOLD_AFTER"]
    path.write_text(json.dumps(cfg))
    assert launcher.main(["launcher", str(path)]) == 0
    state = json.loads((tmp_path / "run.state.json").read_text())
    assert "stopped" not in state and state["finished"] is True and len(state["segments"]) == 2
    assert "resuming run run from" in (tmp_path / "run.log").read_text()


def test_a_checkpoint_cut_short_by_the_stop_is_removed(
    tmp_path: Path, upstream: Path, real: Path, copy_as, monkeypatch
):
    """Space found short at "saving checkpoint to": train.lua is stopped; what it had begun is removed."""
    path = _fixture_run(tmp_path, upstream, threads={"omp": 1}, max_epochs=1.0)
    cfg = json.loads(path.read_text())
    cfg["min_free_mb"] = 1
    path.write_text(json.dumps(cfg))
    cv = tmp_path / "cv" / "run"
    real_feed = launcher.DiskGuard.feed

    def feed(self, line):
        if char_rnn_log.CHECKPOINT_RE.search(line):
            (cv / "lm_run_epoch9.99_3.0000.t7").write_bytes(b"\x03\x00\x00\x00")  # as if train.lua had begun it
            return "short"
        return real_feed(self, line)

    (cv).mkdir(parents=True)
    copy_as(real / "lm_tiny_epoch1.06_3.2739.t7", cv, "lm_run_epoch0.01_3.5000.t7", mtime=1000.0, size=99)
    monkeypatch.setattr(launcher.DiskGuard, "feed", feed)
    assert launcher.main(["launcher", str(path)]) == 75
    assert not (cv / "lm_run_epoch9.99_3.0000.t7").exists()
    assert (cv / "lm_run_epoch0.01_3.5000.t7").exists()  # an older leftover, not this train.lua's
    assert (
        "removed lm_run_epoch9.99_3.0000.t7: train.lua stopped while writing it" in (tmp_path / "run.log").read_text()
    )
