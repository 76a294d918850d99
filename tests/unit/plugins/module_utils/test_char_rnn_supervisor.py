"""plugins/module_utils/char_rnn_supervisor.py: train.lua under supervision, and its checkpoint folder."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils import char_rnn_supervisor as sup

MB = sup.MB
SAVE = "saving checkpoint to cv/lm_run_epoch0.50_1.9000.t7"


def _progress(spb: float = 0.1, i: int = 1) -> str:
    return f"{i}/500 (epoch 0.010), train_loss = 4.17, grad/param norm = 1.2e-01, time/batch = {spb:.4f}s"


class FakeStatvfs:
    """os.statvfs stand-in: ``free`` bytes available to the training user, in 4 KiB blocks."""

    def __init__(self, free: int) -> None:
        self.free = free
        self.calls = 0

    def __call__(self, _path: str):
        self.calls += 1
        return os.statvfs_result((4096, 4096, 10**6, 0, self.free // 4096, 0, 0, 0, 0, 255))


def test_disk_guard_wants_the_floor_plus_the_next_checkpoint():
    statvfs = FakeStatvfs(100 * MB)
    guard = sup.DiskGuard("/cv", 90, checkpoint_size=5 * MB, statvfs=statvfs)
    assert guard.short() is None  # 100 >= 90 + 5
    statvfs.free = 94 * MB
    reason = guard.short()
    assert reason == (
        "94.0 MB free in /cv, less than char_rnn_train_min_free_mb 90 MB plus 5.0 MB for the next checkpoint"
    )
    # floor 0: still never begins a checkpoint that cannot fit
    statvfs.free = 4 * MB
    assert sup.DiskGuard("/cv", 0, checkpoint_size=5 * MB, statvfs=statvfs).short() is not None
    assert sup.DiskGuard("/cv", 0, checkpoint_size=0, statvfs=statvfs).short() is None


def test_disk_guard_checks_before_every_save_and_otherwise_every_few_seconds():
    now = [0.0]
    statvfs = FakeStatvfs(10 * MB)
    guard = sup.DiskGuard("/cv", 50, statvfs=statvfs, clock=lambda: now[0], every=2.0)
    assert guard.feed(_progress()) is not None  # the first line checks
    statvfs.free = 100 * MB
    assert guard.feed(_progress()) is None and statvfs.calls == 1  # within 2 s: not asked again
    statvfs.free = 10 * MB
    assert guard.feed(_progress()) is None and statvfs.calls == 1
    assert guard.feed("evaluating loss over split index 1") is None and statvfs.calls == 1
    assert guard.feed("evaluating loss over split index 2") is not None and statvfs.calls == 2
    assert guard.feed(SAVE) is not None and statvfs.calls == 3
    now[0] = 2.5
    assert guard.feed(_progress()) is not None and statvfs.calls == 4


def test_next_checkpoint_size_grows_with_the_loss_tables():
    assert sup.next_checkpoint_size(0, 1000) == 0  # no checkpoint yet: unknown
    assert sup.next_checkpoint_size(169537, 50) == 169537 + 24 * 51 + 4096


def test_tee_writes_the_log_and_standard_output(tmp_path: Path, capfd):
    tee = sup.Tee(str(tmp_path / "logs" / "run.log"))
    tee.write(b"1/10 (epoch 0.1)\n")
    tee.say("hello")
    assert tee.offset() == (tmp_path / "logs" / "run.log").stat().st_size
    tee.close()
    log = (tmp_path / "logs" / "run.log").read_text().splitlines()
    assert log[0] == "1/10 (epoch 0.1)" and log[1].startswith("char-rnn launcher: ") and log[1].endswith(" hello")
    assert capfd.readouterr().out.splitlines() == log


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
    tee = sup.Tee(str(tmp_path / "run.log"))
    assert sup.prune(str(tmp_path), "run", 0, tee) == []
    assert len(list(tmp_path.glob("lm_*.t7"))) == 6
    # while train.lua runs, the file cut short may be the one it is writing: left for later
    assert [Path(p).name for p in sup.prune(str(tmp_path), "run", 2, tee, training=True)] == [
        "lm_run_epoch2.00_1.9000.t7"
    ]  # fmt: skip
    removed = sup.prune(str(tmp_path), "run", 2, tee)
    assert [Path(p).name for p in removed] == ["lm_run_epoch3.50_1.7000.t7"]
    assert sorted(p.name for p in tmp_path.glob("lm_*.t7")) == [
        "lm_other_epoch1.00_1.0000.t7", "lm_run_epoch1.00_1.5000.t7",
        "lm_run_epoch3.00_1.8000.t7", "lm_run_epoch4.00_1.7000.t7",
    ]  # fmt: skip
    log = (tmp_path / "run.log").read_text()
    assert "removed checkpoint lm_run_epoch3.50_1.7000.t7: cut short" in log
    assert "removed checkpoint lm_run_epoch2.00_1.9000.t7: keeping the newest 2 and the best" in log


def test_remove_cut_short_and_supersede(real: Path, tmp_path: Path, copy_as):
    src = real / "lm_tiny_epoch1.06_3.2739.t7"
    copy_as(src, tmp_path, "lm_run_epoch0.50_2.0000.t7", mtime=1000.0, size=99)  # an older leftover
    copy_as(src, tmp_path, "lm_run_epoch1.00_1.9000.t7", mtime=2000.0, size=99)  # this train.lua's
    copy_as(src, tmp_path, "lm_run_epoch0.90_1.9500.t7", mtime=2000.0)
    tee = sup.Tee(str(tmp_path / "run.log"))
    sup.remove_cut_short(str(tmp_path), "run", 1999.5, tee)
    assert sorted(p.name for p in tmp_path.glob("lm_*.t7")) == [
        "lm_run_epoch0.50_2.0000.t7", "lm_run_epoch0.90_1.9500.t7"
    ]  # fmt: skip
    log = (tmp_path / "run.log").read_text()
    assert "removed lm_run_epoch1.00_1.9000.t7: train.lua stopped while writing it" in log
    sup.supersede([str(p) for p in tmp_path.glob("lm_*.t7")], str(tmp_path), tee)
    assert not list(tmp_path.glob("lm_*.t7"))
    assert len(list(tmp_path.glob("superseded-*/lm_run_*.t7"))) == 2
    assert "moved 2 checkpoint(s) of the previous model to" in (tmp_path / "run.log").read_text()


# ----------------------------------------------------------------------------- run_trainer, with a scripted train.lua


def trainer(tmp_path: Path, lines: list[str], then: str = "") -> list[str]:
    """argv of a stand-in train.lua: prints ``lines`` (flushed one by one), then runs ``then``.

    ``then`` "hold" waits to be stopped (it never goes on by itself, so a test does not race it)."""
    script = tmp_path / "train.py"
    hold = "import time; time.sleep(60); sys.exit(9)" if then == "hold" else then
    script.write_text(f"import os, sys\nfor line in {lines!r}:\n    print(line, flush=True)\n{hold}\n")
    return [sys.executable, str(script)]


class Says:
    """A SpeedWatch or DiskGuard stand-in: its answer ``answer`` at the first line containing ``at``."""

    def __init__(self, at: str, answer: object = "asked") -> None:
        self.at, self.answer, self.lines = at, answer, []

    def feed(self, line: str):
        self.lines.append(line.rstrip("\n"))
        return self.answer if self.at in line else None


@pytest.fixture
def tee(tmp_path: Path):
    tee = sup.Tee(str(tmp_path / "run.log"))
    yield tee
    tee.close()


def test_run_trainer_calls_back_once_each_checkpoint_is_complete(tmp_path: Path, tee):
    lines = [_progress(i=1), SAVE, _progress(i=2), "saving checkpoint to cv/lm_run_epoch1.00_1.8000.t7"]
    saved = []
    code = sup.run_trainer(trainer(tmp_path, lines), dict(os.environ), str(tmp_path), tee, saved=saved.append)
    assert code == 0
    assert saved == [str(tmp_path / "cv/lm_run_epoch0.50_1.9000.t7"), str(tmp_path / "cv/lm_run_epoch1.00_1.8000.t7")]
    assert (tmp_path / "run.log").read_text().splitlines() == lines  # every line, nothing added


@pytest.mark.parametrize(
    ("then", "code", "said"),
    [
        ("sys.exit(3)", 3, "train.lua exited with status 3"),
        ("os.kill(os.getpid(), 9)", 137, "train.lua was killed by signal 9"),
    ],
)
def test_run_trainer_reports_a_crash(tmp_path: Path, tee, then: str, code: int, said: str):
    saved = []
    assert sup.run_trainer(trainer(tmp_path, [SAVE], then), {}, str(tmp_path), tee, saved=saved.append) == code
    assert said in (tmp_path / "run.log").read_text()
    assert saved == []  # announced, never known complete


def test_run_trainer_stops_train_lua_when_the_speed_watch_asks(tmp_path: Path, tee):
    watch = Says("2/500", "time/batch 3.00x the probe's")
    lines = [_progress(i=1), _progress(i=2), _progress(i=3)]
    assert sup.run_trainer(trainer(tmp_path, lines, "hold"), {}, str(tmp_path), tee, watch) == watch.answer
    assert len(watch.lines) == 2  # asked nothing more once it had its answer
    assert (
        "time/batch 3.00x the probe's: stopped train.lua to probe the thread settings again"
        in (tmp_path / "run.log").read_text()
    )


def test_run_trainer_stops_train_lua_when_space_runs_short(tmp_path: Path, tee):
    guard = Says("saving checkpoint", "1.0 MB free")
    watch = Says("never")
    code = sup.run_trainer(trainer(tmp_path, [_progress(), SAVE], "hold"), {}, str(tmp_path), tee, watch, guard)
    assert isinstance(code, sup.LowDisk) and code.reason == "1.0 MB free"
    assert watch.lines == [_progress()]  # the guard's answer came first
    assert "stopped train.lua before its next checkpoint: 1.0 MB free" in (tmp_path / "run.log").read_text()


def test_systemctl_stop_is_forwarded_and_is_a_clean_stop(tmp_path: Path, tee):
    """SIGTERM to the launcher (here: this process, at train.lua's first line) goes to train.lua."""

    class StopHere:
        def feed(self, line: str) -> None:
            os.kill(os.getpid(), signal.SIGTERM)

    assert sup.run_trainer(trainer(tmp_path, [_progress()], "hold"), {}, str(tmp_path), tee, StopHere()) is None
    assert (
        "stopped by signal 15; the next start resumes from the newest checkpoint" in (tmp_path / "run.log").read_text()
    )
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the launcher's own handlers are gone again
