"""The char_rnn_train launcher's decisions: fresh start, resume point, remaining epochs, learning rate."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "plugins" / "module_utils"))  # the launcher imports checkpoints, corpus
_spec = importlib.util.spec_from_file_location(
    "char_rnn_launcher", REPO / "roles" / "char_rnn_train" / "files" / "char_rnn_launcher.py"
)
launcher = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(launcher)

from checkpoints import discover  # noqa: E402

NTRAIN = 100


def config(**options):
    base = {
        "data_dir": "data/tiny",
        "rnn_size": 16,
        "num_layers": 1,
        "model": "lstm",
        "learning_rate": 0.002,
        "learning_rate_decay": 0.5,
        "learning_rate_decay_after": 2.0,
        "decay_rate": 0.95,
        "dropout": 0.0,
        "seq_length": 20,
        "batch_size": 10,
        "max_epochs": 5.0,
        "grad_clip": 5.0,
        "train_frac": 0.95,
        "val_frac": 0.05,
        "seed": 123,
        "print_every": 1,
        "eval_val_every": 50,
        "checkpoint_dir": "cv/run",
        "savefile": "run",
        "gpuid": -1,
    }
    base.update(options)
    return {"run": "run", "options": base}


def entry(name, mtime, valid=True):
    parsed = launcher.checkpoints.parse_name(name)
    return {"path": f"/cv/{name}", "name": name, "mtime": mtime, "valid": valid, **parsed}


def state_for(cfg, started, segments):
    return {
        "model_key": launcher.model_key(cfg["options"]),
        "run_started": started,
        "segments": segments,
    }


def test_no_checkpoint_is_a_fresh_start():
    decision = launcher.plan(config(), None, [], NTRAIN, now=1000.0)
    assert decision["action"] == "fresh"
    assert decision["init_from"] is None
    assert decision["total_iterations"] == 500
    assert decision["options"]["init_from"] == ""
    assert decision["options"]["max_epochs"] * NTRAIN == 500
    assert decision["options"]["learning_rate"] == 0.002
    assert "-init_from" in launcher.train_args(decision["options"])


def test_newest_valid_checkpoint_is_resumed_and_truncated_one_ignored(tmp_path: Path, real: Path, copy_as):
    """Real char-rnn checkpoints; the newest one cut short by a kill is skipped."""
    src = real / "lm_tiny_epoch1.06_3.2739.t7"
    copy_as(src, tmp_path, "lm_run_epoch1.00_3.30.t7", mtime=1000.0)
    copy_as(src, tmp_path, "lm_run_epoch1.50_3.20.t7", mtime=1100.0)
    copy_as(src, tmp_path, "lm_run_epoch2.00_3.10.t7", mtime=1200.0, size=src.stat().st_size // 2)
    copy_as(src, tmp_path, "lm_other_epoch4.00_1.00.t7", mtime=1300.0)
    entries = discover(str(tmp_path), "run")["checkpoints"]
    cfg = config()
    state = state_for(cfg, 900.0, [{"started": 900.0, "offset_iterations": 0, "offset_epochs": 0.0, "total": 500}])
    decision = launcher.plan(cfg, state, entries, NTRAIN, now=1300.0)
    assert decision["action"] == "resume"
    assert decision["checkpoint"] == "lm_run_epoch1.50_3.20.t7"
    assert decision["invalid"] == [str(tmp_path / "lm_run_epoch2.00_3.10.t7")]
    assert decision["offset_iterations"] == 150
    assert decision["remaining_iterations"] == 350
    assert decision["options"]["max_epochs"] * NTRAIN == 350
    assert decision["options"]["init_from"] == str(tmp_path / "lm_run_epoch1.50_3.20.t7")


def test_remaining_epochs_and_decayed_learning_rate_after_a_resumed_segment():
    """The second segment's checkpoint names count from its own start: offsets make them absolute."""
    cfg = config()
    segments = [
        {"started": 100.0, "offset_iterations": 0, "offset_epochs": 0.0, "total": 500},
        {"started": 200.0, "offset_iterations": 250, "offset_epochs": 2.5, "total": 250},
    ]
    entries = [entry("lm_run_epoch2.50_2.0000.t7", 150.0), entry("lm_run_epoch1.00_1.9000.t7", 300.0)]
    decision = launcher.plan(cfg, state_for(cfg, 100.0, segments), entries, NTRAIN, now=400.0)
    assert decision["action"] == "resume"
    assert decision["offset_iterations"] == 350  # 250 + 100 of the second segment
    assert decision["offset_epochs"] == 3.5
    assert decision["remaining_iterations"] == 150
    # decays at the end of epochs 2 and 3 (decay_after 2): 0.002 * 0.5 ** 2
    assert decision["decays"] == 2
    assert decision["learning_rate"] == pytest.approx(0.0005)
    assert decision["options"]["learning_rate"] == pytest.approx(0.0005)
    # the next decay (end of absolute epoch 4) is at the segment's first epoch boundary
    assert decision["options"]["learning_rate_decay_after"] == pytest.approx(-1.5)


def test_finished_run_does_not_train():
    cfg = config(max_epochs=2.0)
    state = state_for(cfg, 100.0, [{"started": 100.0, "offset_iterations": 0, "offset_epochs": 0.0, "total": 200}])
    decision = launcher.plan(cfg, state, [entry("lm_run_epoch2.00_1.5000.t7", 150.0)], NTRAIN, now=200.0)
    assert decision["action"] == "finished"
    assert decision["remaining_iterations"] == 0
    assert "options" not in decision


def test_more_epochs_continue_a_finished_run():
    cfg = config(max_epochs=3.0)
    old = config(max_epochs=2.0)
    state = state_for(old, 100.0, [{"started": 100.0, "offset_iterations": 0, "offset_epochs": 0.0, "total": 200}])
    decision = launcher.plan(cfg, state, [entry("lm_run_epoch2.00_1.5000.t7", 150.0)], NTRAIN, now=200.0)
    assert decision["action"] == "resume"
    assert decision["remaining_iterations"] == 100


def test_changed_model_starts_a_new_run_and_supersedes_old_checkpoints():
    old = config(rnn_size=16)
    state = state_for(old, 100.0, [{"started": 100.0, "offset_iterations": 0, "offset_epochs": 0.0, "total": 500}])
    decision = launcher.plan(config(rnn_size=32), state, [entry("lm_run_epoch1.00_2.0000.t7", 150.0)], NTRAIN, 200.0)
    assert decision["new_run"] is True
    assert decision["action"] == "fresh"
    assert decision["supersede"] == ["/cv/lm_run_epoch1.00_2.0000.t7"]


def test_checkpoints_without_state_are_taken_as_the_first_segment():
    decision = launcher.plan(config(), None, [entry("lm_run_epoch0.50_2.0000.t7", 150.0)], NTRAIN, now=200.0)
    assert decision["action"] == "resume"
    assert decision["offset_iterations"] == 50


@pytest.mark.parametrize(("iterations", "ntrain"), [(1, 49), (350, 100), (7, 3), (5297, 5297), (123, 4567)])
def test_epochs_for_gives_train_lua_exactly_the_iterations(iterations, ntrain):
    epochs = launcher.epochs_for(iterations, ntrain)
    assert epochs * ntrain >= iterations
    assert launcher.total_iterations(epochs, ntrain) == iterations


@pytest.mark.parametrize(
    ("epochs_done", "decay_after", "expected"),
    [(0.5, 10, 0), (9.99, 10, 0), (10.0, 10, 1), (12.3, 10, 3), (3.0, 0, 3), (2.0, 1.5, 1)],
)
def test_decays_done_matches_train_lua(epochs_done, decay_after, expected):
    assert launcher.decays_done(epochs_done, 0.97, decay_after) == expected
    assert launcher.decays_done(epochs_done, 1.0, decay_after) == 0


def test_checkpoint_iteration_snaps_to_eval_points():
    # ntrain 423: epoch 0.47 is 198.8 iterations; checkpoints come every 200
    assert launcher.checkpoint_iteration(0.47, 423, 200, None) == 200
    # the final checkpoint of a segment of 105 iterations
    assert launcher.checkpoint_iteration(0.25, 423, 50, 105) == 105


def test_configured_threads_map_to_environment():
    env, why = launcher.thread_environment({"omp": 2, "openblas": 1, "wait_policy": "PASSIVE"}, "/nonexistent/th", 2)
    assert env == {"OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    assert why == "configured"
    for build in ("pthread", "openmp", "unknown"):
        assert launcher.known_good_threads(build, 2) == {"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"}
    assert launcher.thread_environment("auto", "/nonexistent/th", 4)[0]["OMP_NUM_THREADS"] == "4"


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
    cfg = config(max_epochs=max_epochs, eval_val_every=20)
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


def test_probe_candidates_and_choice(tmp_path: Path):
    candidates = launcher.probe_candidates("/nonexistent/th", 2)
    assert {"OMP_NUM_THREADS": "1"} in candidates
    assert {"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"} in candidates
    assert len(candidates) == len({json.dumps(c, sort_keys=True) for c in candidates})
    # nothing that busy-waits for long with several threads: passive, one thread, or a short bounded
    # spin (libgomp's default is 300000) with no OpenBLAS thread pool spinning beside it
    for c in candidates:
        assert (
            c.get("OMP_WAIT_POLICY") == "PASSIVE"
            or c["OMP_NUM_THREADS"] == "1"
            or ("OMP_WAIT_POLICY" not in c and int(c["GOMP_SPINCOUNT"]) <= 10000 and c["OPENBLAS_NUM_THREADS"] == "1")
        ), c
    assert any("GOMP_SPINCOUNT" in c for c in candidates)
    fast, slow = {"OMP_NUM_THREADS": "1"}, {"OMP_NUM_THREADS": "2"}
    assert launcher.choose_fastest([(slow, 0.8), (fast, 0.12), ({}, None)]) == (fast, 0.12)
    assert launcher.choose_fastest([({}, None)]) is None
    args = launcher.probe_args(config()["options"], NTRAIN, 12, str(tmp_path))
    flags = dict(zip(args[::2], args[1::2], strict=True))
    assert flags["-init_from"] == "" and flags["-checkpoint_dir"] == str(tmp_path)
    assert launcher.total_iterations(float(flags["-max_epochs"]), NTRAIN) == 12
    assert int(flags["-eval_val_every"]) > 12


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


def test_openmp_openblas_beside_the_pthread_one_is_a_candidate(tmp_path: Path, monkeypatch):
    pthread = tmp_path / "openblas-pthread" / "libopenblasp-r0.3.21.so"
    openmp = tmp_path / "openblas-openmp"
    pthread.parent.mkdir()
    monkeypatch.setattr(launcher, "blas_build", lambda th: ("pthread", str(pthread)))
    assert not any("LD_LIBRARY_PATH" in c for c in launcher.probe_candidates("th", 2))  # not installed
    openmp.mkdir()
    (openmp / "libopenblas.so.0").write_bytes(b"")
    assert launcher.openmp_openblas_dir("pthread", str(pthread)) == str(openmp)
    assert launcher.openmp_openblas_dir("openmp", str(openmp / "libopenblas.so.0")) == ""
    candidates = launcher.probe_candidates("th", 2)
    assert {"LD_LIBRARY_PATH": str(openmp), "OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"} in candidates
    # a th that already loads the OpenMP build: its known-good setting is that one, no LD_LIBRARY_PATH
    monkeypatch.setattr(launcher, "blas_build", lambda th: ("openmp", str(openmp / "libopenblas.so.0")))
    assert not any("LD_LIBRARY_PATH" in c for c in launcher.probe_candidates("th", 2))
    env = launcher.with_threads({"LD_LIBRARY_PATH": "/opt/lib", "A": "1"}, {"LD_LIBRARY_PATH": str(openmp)})
    assert env == {"LD_LIBRARY_PATH": f"{openmp}:/opt/lib", "A": "1"}
    assert launcher.with_threads({"A": "1"}, {"OMP_NUM_THREADS": "1"}) == {"A": "1", "OMP_NUM_THREADS": "1"}


def _progress(spb: float, i: int = 1) -> str:
    return f"{i}/500 (epoch 0.010), train_loss = 4.17, grad/param norm = 1.2e-01, time/batch = {spb:.4f}s"


def test_speed_watch_asks_at_once_when_twice_as_slow():
    watch = launcher.SpeedWatch(0.1, window=4)
    assert [watch.feed(_progress(0.1)) for _batch in range(4)] == [None] * 4
    assert watch.feed(_progress(0.25)) is None  # median of 0.1 0.1 0.1 0.25: still 0.1
    assert watch.feed("evaluating loss over split index 2") is None
    reason = watch.feed(_progress(0.25))  # median 0.25: 2.5x
    assert reason and "2.50x" in reason


def test_speed_watch_waits_for_the_checkpoint_to_be_written_on_a_moderate_change():
    for spb in (0.16, 0.05):  # 1.6x slower (load came), 2x faster (load went)
        watch = launcher.SpeedWatch(0.1, window=4)
        assert [watch.feed(_progress(spb)) for _batch in range(6)] == [None] * 6
        assert watch.feed("saving checkpoint to cv/lm_run_epoch0.50_1.9000.t7") is None  # written after this line
        assert watch.feed(_progress(spb)) is not None
    # back within 1.5x before the checkpoint: nothing to do
    watch = launcher.SpeedWatch(0.1, window=4)
    for spb in (0.16,) * 4 + (0.11,) * 4:
        assert watch.feed(_progress(spb)) is None
    watch.feed("saving checkpoint to cv/lm_run_epoch0.50_1.9000.t7")
    assert watch.feed(_progress(0.11)) is None
    # the run's last batch (after its final checkpoint) is never a reason to stop it
    watch = launcher.SpeedWatch(0.1, window=2)
    for spb in (0.16,) * 3:
        watch.feed(_progress(spb))
    watch.feed("saving checkpoint to cv/lm_run_epoch1.00_1.9000.t7")
    assert watch.feed(_progress(0.16, i=500)) is None


def test_speed_watch_is_quiet_until_not_before():
    now = [100.0]
    watch = launcher.SpeedWatch(0.1, not_before=160.0, window=2, clock=lambda: now[0])
    assert [watch.feed(_progress(0.5)) for _batch in range(5)] == [None] * 5
    now[0] = 161.0
    assert watch.feed(_progress(0.5)) is not None


def test_speed_watch_reprobes_and_resumes_the_run(tmp_path: Path, upstream: Path, monkeypatch):
    """FIXTURE train.lua: the watch stops train.lua after a checkpoint, the launcher probes again and resumes."""
    probes = []

    def fake_probe(config, ntrain, cpus, tee, batches=12):
        probes.append(config["run"])
        # first probe: a figure the fixture's time/batch is far from; second: none, so no watch
        return {"OMP_NUM_THREADS": str(len(probes))}, f"fake probe {len(probes)}", (1.0 if len(probes) == 1 else None)

    monkeypatch.setattr(launcher, "probe_threads", fake_probe)
    monkeypatch.setattr(launcher, "REPROBE_EVERY", 0.0)
    monkeypatch.setattr(launcher, "WATCH_WINDOW", 5)
    path = _fixture_run(tmp_path, upstream, threads="probe", max_epochs=0.2)  # checkpoints every 20 batches
    assert launcher.main(["launcher", str(path)]) == 0
    log = (tmp_path / "run.log").read_text()
    assert len(probes) == 2
    assert "stopped train.lua to probe the thread settings again" in log
    assert "resuming run run from" in log and "threads (fake probe 2): OMP_NUM_THREADS=2" in log
    state = json.loads((tmp_path / "run.state.json").read_text())
    assert state["finished"] is True and len(state["segments"]) == 2
    assert "reprobe" not in state["threads"] and state["threads"]["env"] == {"OMP_NUM_THREADS": "2"}


def test_systemctl_stop_is_a_clean_exit_and_not_the_end_of_the_run(tmp_path: Path, upstream: Path):
    import signal
    import subprocess
    import time

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


# ----------------------------------------------------------------------------- disk: keep_checkpoints, min_free_mb


class FakeStatvfs:
    """os.statvfs stand-in: ``free`` bytes available to the training user, in 4 KiB blocks."""

    def __init__(self, free: int) -> None:
        self.free = free
        self.calls = 0

    def __call__(self, _path: str):
        self.calls += 1
        return os.statvfs_result((4096, 4096, 10**6, 0, self.free // 4096, 0, 0, 0, 0, 255))


def test_disk_guard_wants_the_floor_plus_the_next_checkpoint():
    mb = launcher.MB
    statvfs = FakeStatvfs(100 * mb)
    guard = launcher.DiskGuard("/cv", 90, checkpoint_size=5 * mb, statvfs=statvfs)
    assert guard.short() is None  # 100 >= 90 + 5
    statvfs.free = 94 * mb
    reason = guard.short()
    assert reason == (
        "94.0 MB free in /cv, less than char_rnn_train_min_free_mb 90 MB plus 5.0 MB for the next checkpoint"
    )
    # floor 0: still never begins a checkpoint that cannot fit
    statvfs.free = 4 * mb
    assert launcher.DiskGuard("/cv", 0, checkpoint_size=5 * mb, statvfs=statvfs).short() is not None
    assert launcher.DiskGuard("/cv", 0, checkpoint_size=0, statvfs=statvfs).short() is None


def test_disk_guard_checks_before_every_save_and_otherwise_every_few_seconds():
    now = [0.0]
    statvfs = FakeStatvfs(10 * launcher.MB)
    guard = launcher.DiskGuard("/cv", 50, statvfs=statvfs, clock=lambda: now[0], every=2.0)
    assert guard.feed(_progress(0.1)) is not None  # the first line checks
    statvfs.free = 100 * launcher.MB
    assert guard.feed(_progress(0.1)) is None and statvfs.calls == 1  # within 2 s: not asked again
    statvfs.free = 10 * launcher.MB
    assert guard.feed(_progress(0.1)) is None and statvfs.calls == 1
    assert guard.feed("evaluating loss over split index 1") is None and statvfs.calls == 1
    assert guard.feed("evaluating loss over split index 2") is not None and statvfs.calls == 2
    assert guard.feed("saving checkpoint to cv/lm_run_epoch0.50_1.9000.t7") is not None and statvfs.calls == 3
    now[0] = 2.5
    assert guard.feed(_progress(0.1)) is not None and statvfs.calls == 4


def test_next_checkpoint_size_grows_with_the_loss_tables():
    assert launcher.next_checkpoint_size(0, 1000) == 0  # no checkpoint yet: unknown
    assert launcher.next_checkpoint_size(169537, 50) == 169537 + 24 * 51 + 4096


def test_prune_removes_all_but_the_best_and_the_newest(real: Path, tmp_path: Path, copy_as):
    src = real / "lm_tiny_epoch1.06_3.2739.t7"
    for n, (name, size) in enumerate(
        [
            ("lm_run_epoch1.00_1.5000.t7", None),
            ("lm_run_epoch2.00_1.9000.t7", None),
            ("lm_run_epoch3.00_1.8000.t7", None),
            ("lm_run_epoch3.50_1.7000.t7", 999),
            ("lm_run_epoch4.00_1.7000.t7", None),
        ]
    ):
        copy_as(src, tmp_path, name, mtime=1000.0 + n, size=size)
    copy_as(src, tmp_path, "lm_other_epoch1.00_1.0000.t7", mtime=900.0)
    tee = launcher.Tee(str(tmp_path / "run.log"))
    assert launcher.prune(str(tmp_path), "run", 0, tee) == []
    assert len(list(tmp_path.glob("lm_*.t7"))) == 6
    removed = launcher.prune(str(tmp_path), "run", 2, tee)
    assert sorted(Path(p).name for p in removed) == [
        "lm_run_epoch2.00_1.9000.t7", "lm_run_epoch3.50_1.7000.t7"
    ]  # fmt: skip
    assert sorted(p.name for p in tmp_path.glob("lm_*.t7")) == [
        "lm_other_epoch1.00_1.0000.t7", "lm_run_epoch1.00_1.5000.t7",
        "lm_run_epoch3.00_1.8000.t7", "lm_run_epoch4.00_1.7000.t7",
    ]  # fmt: skip
    log = (tmp_path / "run.log").read_text()
    assert "removed checkpoint lm_run_epoch3.50_1.7000.t7: cut short" in log
    assert "removed checkpoint lm_run_epoch2.00_1.9000.t7: keeping the newest 2 and the best" in log


def _saved_checkpoints(log: str) -> list[str]:
    return [Path(m.group("path")).name for m in launcher.char_rnn_log.CHECKPOINT_RE.finditer(log)]


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
    best = min(written, key=lambda name: launcher.checkpoints.parse_name(name)["val_loss"])
    left = sorted(p.name for p in (tmp_path / "cv" / "run").glob("lm_*.t7"))
    assert left == sorted({*written[-2:], best})
    assert log.count("removed checkpoint") == len(written) - len(left)


def test_min_free_mb_stops_the_run_cleanly_and_a_start_resumes(tmp_path: Path, upstream: Path, monkeypatch):
    """FIXTURE train.lua: space runs short after two checkpoints; the run stops before the third."""
    path = _fixture_run(tmp_path, upstream, threads={"omp": 1}, max_epochs=1.0)
    cfg = json.loads(path.read_text())
    # a little time per batch, so that train.lua does not finish before the launcher has read its output
    cfg.update(min_free_mb=100, unit="char-rnn-train-run.service", environment={"FIXTURE_SECONDS_PER_BATCH": "0.005"})
    path.write_text(json.dumps(cfg))
    cv = tmp_path / "cv" / "run"
    free = {"mb": 1000}

    def fake_free(self):
        if sum(launcher.checkpoints.check_t7(str(p)) is None for p in cv.glob("lm_*.t7")) >= 2:
            free["mb"] = 100  # the floor exactly: no room for the next checkpoint
        return free["mb"] * launcher.MB

    monkeypatch.setattr(launcher.DiskGuard, "free", fake_free)
    assert launcher.main(["launcher", str(path)]) == launcher.EXIT_LOW_DISK == 75
    log = (tmp_path / "run.log").read_text()
    # train.lua can be a little ahead of the launcher reading its output
    left = list(cv.glob("lm_*.t7"))
    assert 2 <= len(left) < 190 // 20
    assert all(launcher.checkpoints.check_t7(str(p)) is None for p in left)  # none cut short
    assert "stopped train.lua before its next checkpoint: 100.0 MB free in" in log
    assert "run run stopped, low disk space" in log and "start char-rnn-train-run.service again" in log
    state = json.loads((tmp_path / "run.state.json").read_text())
    assert state["finished"] is False
    assert state["stopped"]["reason"].startswith("low disk space: 100.0 MB free in ")
    # still short: the launcher does not start train.lua at all
    assert launcher.main(["launcher", str(path)]) == 75
    assert len(json.loads((tmp_path / "run.state.json").read_text())["segments"]) == 1
    # space freed: it resumes from the newest checkpoint and the stop is forgotten
    monkeypatch.setattr(launcher.DiskGuard, "free", lambda self: 10**6 * launcher.MB)
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
        if launcher.char_rnn_log.CHECKPOINT_RE.search(line):
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
