"""plugins/module_utils/char_rnn_threads.py: auto, probe and fixed thread settings, and the speed watch."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils import char_rnn_plan
from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils import char_rnn_threads as threads

NTRAIN = 100
OPTIONS = {"data_dir": "data/tiny", "max_epochs": 5.0, "eval_val_every": 50, "checkpoint_dir": "cv", "savefile": "run"}


def no_blas_detection(*_args, **_kwargs):
    raise AssertionError("auto and fixed settings must not look at the BLAS")


def test_auto_is_the_known_good_setting_without_looking_at_the_blas(monkeypatch):
    monkeypatch.setattr(threads, "blas_build", no_blas_detection)
    assert threads.known_good_threads(2) == {"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"}
    assert threads.known_good_threads(0) == {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    env, why = threads.thread_environment("auto", 4)
    assert env == {"OMP_NUM_THREADS": "4", "OMP_WAIT_POLICY": "PASSIVE"}
    assert why == "auto, known-good for every OpenBLAS build on 4 CPUs"
    assert threads.thread_environment(None, 4) == threads.thread_environment({}, 4) == (env, why)


def test_configured_threads_map_to_environment(monkeypatch):
    monkeypatch.setattr(threads, "blas_build", no_blas_detection)
    env, why = threads.thread_environment({"omp": 2, "openblas": 1, "wait_policy": "PASSIVE", "GOMP_SPINCOUNT": 0}, 8)
    assert env == {"OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE",
                   "GOMP_SPINCOUNT": "0"}  # fmt: skip
    assert why == "configured"
    assert threads.thread_environment({"omp": 1, "openblas": None, "wait_policy": ""}, 8)[0] == {"OMP_NUM_THREADS": "1"}


def fake_th(tmp_path: Path, libth: bool = True) -> Path:
    """A th in <prefix>/bin with <prefix>/lib/libTH.so beside it, as torch_install lays them out."""
    (tmp_path / "bin").mkdir(parents=True)
    (tmp_path / "lib").mkdir()
    th = tmp_path / "bin" / "th"
    th.write_text("#!/bin/sh\n")
    if libth:
        (tmp_path / "lib" / "libTH.so").write_bytes(b"")
    return th


def fake_ldd(tmp_path: Path, line: str) -> str:
    ldd = tmp_path / "ldd"
    ldd.write_text(f"#!/bin/sh\necho '\tlinux-vdso.so.1 (0x00007ffd)'\necho '\t{line}'\n")
    ldd.chmod(0o755)
    return str(ldd)


def test_blas_build_reads_ldd_of_libth(tmp_path: Path):
    th = fake_th(tmp_path)
    pthread = tmp_path / "openblas-pthread" / "libopenblas.so.0"
    pthread.parent.mkdir()
    pthread.write_bytes(b"")
    ldd = fake_ldd(tmp_path, f"libopenblas.so.0 => {pthread} (0x00007f00)")
    assert threads.blas_build(str(th), ldd=ldd) == ("pthread", str(pthread))
    assert threads.blas_build(str(th), ldd=fake_ldd(tmp_path, "libblas.so.3 => /usr/lib/libblas.so.3 (0x1)")) == (
        "unknown", ""
    )  # fmt: skip
    assert threads.blas_build(str(th), ldd=str(tmp_path / "no-ldd")) == ("unknown", "")
    assert threads.blas_build(str(fake_th(tmp_path / "nolib", libth=False)), ldd=ldd) == ("unknown", "")


def test_probe_candidates_and_choice(tmp_path: Path):
    candidates = threads.probe_candidates("/nonexistent/th", 2)
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
    assert threads.choose_fastest([(slow, 0.8), (fast, 0.12), ({}, None)]) == (fast, 0.12)
    assert threads.choose_fastest([({}, None)]) is None
    args = threads.probe_args(OPTIONS, NTRAIN, 12, str(tmp_path))
    flags = dict(zip(args[::2], args[1::2], strict=True))
    assert flags["-init_from"] == "" and flags["-checkpoint_dir"] == str(tmp_path) and flags["-savefile"] == "probe"
    assert char_rnn_plan.total_iterations(float(flags["-max_epochs"]), NTRAIN) == 12
    assert int(flags["-eval_val_every"]) > 12


def test_openmp_openblas_beside_the_pthread_one_is_a_candidate(tmp_path: Path, monkeypatch):
    pthread = tmp_path / "openblas-pthread" / "libopenblasp-r0.3.21.so"
    openmp = tmp_path / "openblas-openmp"
    pthread.parent.mkdir()
    monkeypatch.setattr(threads, "blas_build", lambda th: ("pthread", str(pthread)))
    assert not any("LD_LIBRARY_PATH" in c for c in threads.probe_candidates("th", 2))  # not installed
    openmp.mkdir()
    (openmp / "libopenblas.so.0").write_bytes(b"")
    assert threads.openmp_openblas_dir("pthread", str(pthread)) == str(openmp)
    assert threads.openmp_openblas_dir("openmp", str(openmp / "libopenblas.so.0")) == ""
    candidates = threads.probe_candidates("th", 2)
    assert {"LD_LIBRARY_PATH": str(openmp), "OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"} in candidates
    # a th that already loads the OpenMP build: its known-good setting is that one, no LD_LIBRARY_PATH
    monkeypatch.setattr(threads, "blas_build", lambda th: ("openmp", str(openmp / "libopenblas.so.0")))
    assert not any("LD_LIBRARY_PATH" in c for c in threads.probe_candidates("th", 2))
    assert threads.probe_candidates("th", 2, build=("pthread", str(pthread)))[-1]["LD_LIBRARY_PATH"] == str(openmp)
    env = threads.with_threads({"LD_LIBRARY_PATH": "/opt/lib", "A": "1"}, {"LD_LIBRARY_PATH": str(openmp)})
    assert env == {"LD_LIBRARY_PATH": f"{openmp}:/opt/lib", "A": "1"}
    assert threads.with_threads({"A": "1"}, {"OMP_NUM_THREADS": "1"}) == {"A": "1", "OMP_NUM_THREADS": "1"}
    assert threads.without_threads({"A": "1", "OMP_NUM_THREADS": "8", "GOMP_SPINCOUNT": "0"}) == {"A": "1"}


def test_probe_times_each_candidate_and_keeps_the_fastest(tmp_path: Path):
    """A th that prints train.lua's progress lines, faster with one OpenMP thread: the probe picks it."""
    th = tmp_path / "th"
    th.write_text(
        f"#!{sys.executable}\n"
        "import os, sys\n"
        "assert sys.argv[1] == 'train.lua' and '-init_from' in sys.argv, sys.argv\n"
        "spb = 0.1 if os.environ.get('OMP_NUM_THREADS') == '1' else 0.3\n"
        "if os.environ.get('OMP_WAIT_POLICY') == 'PASSIVE' and os.environ.get('OPENBLAS_NUM_THREADS'):\n"
        "    sys.exit(1)  # prints nothing: no timing\n"
        "for i in range(1, 13):\n"
        "    print(f'{i}/12 (epoch 0.1), train_loss = 4.1, grad/param norm = 1.2e-01, time/batch = {spb:.4f}s')\n"
    )
    th.chmod(0o755)
    config = {"run": "run", "th": str(th), "char_rnn_dir": str(tmp_path), "state_path": str(tmp_path / "run.json"),
              "options": OPTIONS, "environment": {"EXTRA": "1"}}  # fmt: skip
    said = []
    env, why, spb = threads.probe_threads(config, NTRAIN, 2, said.append)
    assert env == {"OMP_NUM_THREADS": "1"} and spb == pytest.approx(0.1)
    assert why == "probe of 4 settings x 12 batches, fastest 0.1000 s/batch"
    assert said[0] == "probe OMP_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE: 0.3000 s/batch"
    assert "probe OMP_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE OPENBLAS_NUM_THREADS=1: no timing" in said
    assert not (tmp_path / ".probe-run").exists()
    th.write_text("#!/bin/sh\nexit 1\n")  # no timing at all: the known-good setting
    env, why, spb = threads.probe_threads(config, NTRAIN, 2, said.append)
    assert (env, spb) == (threads.known_good_threads(2), None) and why.startswith("probe gave no timing; auto")


def test_select_probes_once_per_run_and_again_when_the_watch_asks(monkeypatch):
    probes = []

    def fake_probe(config, ntrain, cpus, say, batches=12):
        probes.append(cpus)
        return {"OMP_NUM_THREADS": "1"}, f"fake probe {len(probes)}", 0.25

    monkeypatch.setattr(threads, "probe_threads", fake_probe)
    config = {"th": "/opt/th", "threads": "probe"}
    first = threads.select(config, None, NTRAIN, 2, print, clock=lambda: 1000.0)
    assert first == {"setting": "probe", "th": "/opt/th", "env": {"OMP_NUM_THREADS": "1"}, "why": "fake probe 1",
                     "seconds_per_batch": 0.25, "probed_at": 1000.0}  # fmt: skip
    again = threads.select(config, first, NTRAIN, 2, print, clock=lambda: 2000.0)
    assert probes == [2] and again == {**first, "why": "probed earlier in this run"}
    assert threads.select(config, {**first, "reprobe": "slower"}, NTRAIN, 2, print, clock=lambda: 3000.0)[
        "probed_at"
    ] == 3000.0  # fmt: skip
    assert threads.select({**config, "th": "/new/th"}, first, NTRAIN, 2, print)["why"] == "fake probe 3"
    # auto and a dict never probe; the record says which
    auto = threads.select({"th": "/opt/th", "threads": "auto"}, first, NTRAIN, 2, print)
    assert auto["setting"] == "auto" and auto["seconds_per_batch"] is None and auto["probed_at"] == 0.0
    fixed = threads.select({"th": "/opt/th", "threads": {"omp": 3}}, None, NTRAIN, 2, print)
    assert fixed["setting"] == "configured" and fixed["env"] == {"OMP_NUM_THREADS": "3"}
    assert len(probes) == 3


def test_a_speed_watch_only_after_a_probe(monkeypatch):
    assert threads.speed_watch({"seconds_per_batch": None, "probed_at": 0.0}) is None
    watch = threads.speed_watch({"seconds_per_batch": 0.2, "probed_at": 1000.0})
    assert (watch.reference, watch.not_before, watch.window) == (0.2, 1000.0 + threads.REPROBE_EVERY, 100)


def _progress(spb: float, i: int = 1) -> str:
    return f"{i}/500 (epoch 0.010), train_loss = 4.17, grad/param norm = 1.2e-01, time/batch = {spb:.4f}s"


def test_speed_watch_asks_at_once_when_twice_as_slow():
    watch = threads.SpeedWatch(0.1, window=4)
    assert [watch.feed(_progress(0.1)) for _batch in range(4)] == [None] * 4
    assert watch.feed(_progress(0.25)) is None  # median of 0.1 0.1 0.1 0.25: still 0.1
    assert watch.feed("evaluating loss over split index 2") is None
    reason = watch.feed(_progress(0.25))  # median 0.25: 2.5x
    assert reason and "2.50x" in reason


def test_speed_watch_waits_for_the_checkpoint_to_be_written_on_a_moderate_change():
    for spb in (0.16, 0.05):  # 1.6x slower (load came), 2x faster (load went)
        watch = threads.SpeedWatch(0.1, window=4)
        assert [watch.feed(_progress(spb)) for _batch in range(6)] == [None] * 6
        assert watch.feed("saving checkpoint to cv/lm_run_epoch0.50_1.9000.t7") is None  # written after this line
        assert watch.feed(_progress(spb)) is not None
    # back within 1.5x before the checkpoint: nothing to do
    watch = threads.SpeedWatch(0.1, window=4)
    for spb in (0.16,) * 4 + (0.11,) * 4:
        assert watch.feed(_progress(spb)) is None
    watch.feed("saving checkpoint to cv/lm_run_epoch0.50_1.9000.t7")
    assert watch.feed(_progress(0.11)) is None
    # the run's last batch (after its final checkpoint) is never a reason to stop it
    watch = threads.SpeedWatch(0.1, window=2)
    for spb in (0.16,) * 3:
        watch.feed(_progress(spb))
    watch.feed("saving checkpoint to cv/lm_run_epoch1.00_1.9000.t7")
    assert watch.feed(_progress(0.16, i=500)) is None


def test_speed_watch_is_quiet_until_not_before():
    now = [100.0]
    watch = threads.SpeedWatch(0.1, not_before=160.0, window=2, clock=lambda: now[0])
    assert [watch.feed(_progress(0.5)) for _batch in range(5)] == [None] * 5
    now[0] = 161.0
    assert watch.feed(_progress(0.5)) is not None
