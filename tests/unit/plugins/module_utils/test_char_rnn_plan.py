"""plugins/module_utils/char_rnn_plan.py: fresh start, resume point, remaining epochs, learning rate, command line."""

from __future__ import annotations

from pathlib import Path

import pytest
from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils import char_rnn_plan as plan
from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils import checkpoints
from run_config import run_config

NTRAIN = 100


def entry(name, mtime, valid=True):
    parsed = checkpoints.parse_name(name)
    return {"path": f"/cv/{name}", "name": name, "mtime": mtime, "valid": valid, **parsed}


def state_for(cfg, started, segments):
    return {"model_key": plan.model_key(cfg["options"]), "run_started": started, "segments": segments}


def test_no_checkpoint_is_a_fresh_start():
    decision = plan.plan(run_config(), None, [], NTRAIN, now=1000.0)
    assert decision["action"] == "fresh"
    assert decision["init_from"] is None
    assert decision["total_iterations"] == 500
    assert decision["options"]["init_from"] == ""
    assert decision["options"]["max_epochs"] * NTRAIN == 500
    assert decision["options"]["learning_rate"] == 0.002
    assert "-init_from" in plan.train_args(decision["options"])


def test_newest_valid_checkpoint_is_resumed_and_truncated_one_ignored(tmp_path: Path, real: Path, copy_as):
    """Real char-rnn checkpoints; the newest one cut short by a kill is skipped."""
    src = real / "lm_tiny_epoch1.06_3.2739.t7"
    copy_as(src, tmp_path, "lm_run_epoch1.00_3.30.t7", mtime=1000.0)
    copy_as(src, tmp_path, "lm_run_epoch1.50_3.20.t7", mtime=1100.0)
    copy_as(src, tmp_path, "lm_run_epoch2.00_3.10.t7", mtime=1200.0, size=src.stat().st_size // 2)
    copy_as(src, tmp_path, "lm_other_epoch4.00_1.00.t7", mtime=1300.0)
    entries = checkpoints.discover(str(tmp_path), "run")["checkpoints"]
    cfg = run_config()
    state = state_for(cfg, 900.0, [{"started": 900.0, "offset_iterations": 0, "offset_epochs": 0.0, "total": 500}])
    decision = plan.plan(cfg, state, entries, NTRAIN, now=1300.0)
    assert decision["action"] == "resume"
    assert decision["checkpoint"] == "lm_run_epoch1.50_3.20.t7"
    assert decision["invalid"] == [str(tmp_path / "lm_run_epoch2.00_3.10.t7")]
    assert decision["offset_iterations"] == 150
    assert decision["remaining_iterations"] == 350
    assert decision["options"]["max_epochs"] * NTRAIN == 350
    assert decision["options"]["init_from"] == str(tmp_path / "lm_run_epoch1.50_3.20.t7")


def test_remaining_epochs_and_decayed_learning_rate_after_a_resumed_segment():
    """The second segment's checkpoint names count from its own start: offsets make them absolute."""
    cfg = run_config()
    segments = [
        {"started": 100.0, "offset_iterations": 0, "offset_epochs": 0.0, "total": 500},
        {"started": 200.0, "offset_iterations": 250, "offset_epochs": 2.5, "total": 250},
    ]
    entries = [entry("lm_run_epoch2.50_2.0000.t7", 150.0), entry("lm_run_epoch1.00_1.9000.t7", 300.0)]
    decision = plan.plan(cfg, state_for(cfg, 100.0, segments), entries, NTRAIN, now=400.0)
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


def test_a_segments_final_checkpoint_is_its_last_iteration():
    """A segment of 105 iterations ends at epoch "1.05" of 100 per epoch: not the eval point 100."""
    cfg = run_config(max_epochs=3.0)
    segments = [
        {"started": 100.0, "offset_iterations": 0, "offset_epochs": 0.0, "total": 300},
        {"started": 200.0, "offset_iterations": 195, "offset_epochs": 1.95, "total": 105},
    ]
    decision = plan.plan(cfg, state_for(cfg, 100.0, segments), [entry("lm_run_epoch1.05_1.0.t7", 300.0)], NTRAIN, 400)
    assert decision["offset_iterations"] == 300 and decision["action"] == "finished"


def test_finished_run_does_not_train():
    cfg = run_config(max_epochs=2.0)
    state = state_for(cfg, 100.0, [{"started": 100.0, "offset_iterations": 0, "offset_epochs": 0.0, "total": 200}])
    decision = plan.plan(cfg, state, [entry("lm_run_epoch2.00_1.5000.t7", 150.0)], NTRAIN, now=200.0)
    assert decision["action"] == "finished"
    assert decision["remaining_iterations"] == 0
    assert "options" not in decision


def test_more_epochs_continue_a_finished_run():
    cfg = run_config(max_epochs=3.0)
    old = run_config(max_epochs=2.0)
    state = state_for(old, 100.0, [{"started": 100.0, "offset_iterations": 0, "offset_epochs": 0.0, "total": 200}])
    decision = plan.plan(cfg, state, [entry("lm_run_epoch2.00_1.5000.t7", 150.0)], NTRAIN, now=200.0)
    assert decision["action"] == "resume"
    assert decision["remaining_iterations"] == 100


def test_changed_model_starts_a_new_run_and_supersedes_old_checkpoints():
    old = run_config(rnn_size=16)
    state = state_for(old, 100.0, [{"started": 100.0, "offset_iterations": 0, "offset_epochs": 0.0, "total": 500}])
    decision = plan.plan(run_config(rnn_size=32), state, [entry("lm_run_epoch1.00_2.0000.t7", 150.0)], NTRAIN, 200.0)
    assert decision["new_run"] is True
    assert decision["action"] == "fresh"
    assert decision["supersede"] == ["/cv/lm_run_epoch1.00_2.0000.t7"]


def test_checkpoints_without_state_are_taken_as_the_first_segment():
    decision = plan.plan(run_config(), None, [entry("lm_run_epoch0.50_2.0000.t7", 150.0)], NTRAIN, now=200.0)
    assert decision["action"] == "resume"
    assert decision["offset_iterations"] == 50
    assert decision["reason"].startswith("no launcher state")


def test_checkpoints_older_than_the_run_are_not_resumed():
    cfg = run_config()
    state = state_for(cfg, 1000.0, [{"started": 1000.0, "offset_iterations": 0, "offset_epochs": 0.0, "total": 500}])
    decision = plan.plan(cfg, state, [entry("lm_run_epoch4.00_1.0000.t7", 500.0)], NTRAIN, now=1100.0)
    assert decision["action"] == "fresh"


@pytest.mark.parametrize(("iterations", "ntrain"), [(1, 49), (350, 100), (7, 3), (5297, 5297), (123, 4567)])
def test_epochs_for_gives_train_lua_exactly_the_iterations(iterations, ntrain):
    epochs = plan.epochs_for(iterations, ntrain)
    assert epochs * ntrain >= iterations
    assert plan.total_iterations(epochs, ntrain) == iterations


@pytest.mark.parametrize(
    ("epochs_done", "decay_after", "expected"),
    [(0.5, 10, 0), (9.99, 10, 0), (10.0, 10, 1), (12.3, 10, 3), (3.0, 0, 3), (2.0, 1.5, 1)],
)
def test_decays_done_matches_train_lua(epochs_done, decay_after, expected):
    assert plan.decays_done(epochs_done, 0.97, decay_after) == expected
    assert plan.decays_done(epochs_done, 1.0, decay_after) == 0


def test_train_args_and_command_line():
    options = {"max_epochs": 0.35, "print_every": 1, "init_from": "", "accurate_gpu_timing": False, "opencl": None}
    args = ["-max_epochs", "0.35", "-print_every", "1", "-init_from", "", "-accurate_gpu_timing", "0"]
    assert plan.train_args(options) == args
    assert plan.command_line("/opt/th", options) == ["/opt/th", "train.lua", *args]
    # Torch prints through C stdio: line-buffered by stdbuf when there is one
    assert plan.command_line("/opt/th", options, "/usr/bin/stdbuf") == [
        "/usr/bin/stdbuf", "-oL", "-eL", "/opt/th", "train.lua", *args
    ]  # fmt: skip


def test_train_batches_from_the_corpus(tmp_path: Path):
    options = run_config()["options"]
    (tmp_path / "data" / "tiny").mkdir(parents=True)
    with pytest.raises(plan.PlanError, match=r"cannot use the corpus in .*data/tiny"):
        plan.train_batches(str(tmp_path), options)
    (tmp_path / "data" / "tiny" / "input.txt").write_text("x" * 300)
    with pytest.raises(plan.PlanError, match=r"\(300 bytes\) gives .*too small for this batch_size x seq_length"):
        plan.train_batches(str(tmp_path), options)
    (tmp_path / "data" / "tiny" / "input.txt").write_text("x" * 40_000)
    assert plan.train_batches(str(tmp_path), options) == 190  # 200 batches of 10 x 20, 95 % of them


def test_state_records_segments_and_the_finish():
    cfg = run_config()
    decision = plan.plan(cfg, None, [], NTRAIN, now=1000.0)
    state = plan.new_state(cfg, decision)
    assert state["run_started"] == 1000.0 and state["model_key"]["rnn_size"] == 16
    decision["threads"] = {"OMP_NUM_THREADS": "2"}
    plan.add_segment(state, decision, 1000.0, log_offset=42)
    assert state["finished"] is False and state["total_iterations"] == 500 and state["max_epochs"] == 5.0
    assert state["segments"] == [
        {"started": 1000.0, "offset_iterations": 0, "offset_epochs": 0.0, "total": 500, "init_from": None,
         "learning_rate": 0.002, "log_offset": 42, "threads": {"OMP_NUM_THREADS": "2"}}
    ]  # fmt: skip
    finished = plan.plan(cfg, state, [entry("lm_run_epoch5.00_1.0000.t7", 2000.0)], NTRAIN, now=3000.0)
    plan.add_segment(state, finished, 3000.0, log_offset=99)
    assert state["finished"] is True and len(state["segments"]) == 1


def test_summary_lines():
    cfg = run_config()
    fresh = plan.plan(cfg, None, [], NTRAIN, now=1000.0)
    assert plan.summary("run", fresh) == "starting run run: 500 iterations (100 per epoch)"
    segments = [{"started": 100.0, "offset_iterations": 0, "offset_epochs": 0.0, "total": 500}]
    resume = plan.plan(cfg, state_for(cfg, 100.0, segments), [entry("lm_run_epoch2.50_2.0000.t7", 150.0)], NTRAIN, 200)
    assert plan.summary("run", resume) == (
        "resuming run run from /cv/lm_run_epoch2.50_2.0000.t7 at iteration 250/500 (epoch 2.500): "
        "250 iterations left, learning rate 0.001"
    )
    done = plan.plan(cfg, state_for(cfg, 100.0, segments), [entry("lm_run_epoch5.00_1.0000.t7", 150.0)], NTRAIN, 200)
    assert plan.summary("run", done) == (
        "run run already finished: 500/500 iterations (newest checkpoint lm_run_epoch5.00_1.0000.t7); not training"
    )
