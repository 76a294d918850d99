"""The sweep filters: the grid's runs and names, their placement on hosts, and the leaderboard."""

from __future__ import annotations

import base64
import csv
import io
import json
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.rnn_bootstrap.char_rnn.plugins.filter.sweep_leaderboard import FilterModule as Leaderboard
from ansible_collections.rnn_bootstrap.char_rnn.plugins.filter.sweep_placement import FilterModule as Placement
from ansible_collections.rnn_bootstrap.char_rnn.plugins.filter.sweep_runs import FilterModule as Runs
from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils.char_rnn_log import parse_text

sweep_runs = Runs().filters()["sweep_runs"]
sweep_placement = Placement().filters()["sweep_placement"]
sweep_leaderboard = Leaderboard().filters()["sweep_leaderboard"]

# the char_rnn_train role's defaults, as the playbook passes them (strings: Ansible templated them)
BASE = {
    "model": "lstm", "rnn_size": "128", "num_layers": "2", "dropout": "0", "learning_rate": "0.002",
    "seq_length": "50", "batch_size": "50", "learning_rate_decay": "0.97", "learning_rate_decay_after": "10",
    "decay_rate": "0.95", "grad_clip": "5", "max_epochs": "50", "seed": "123",
}  # fmt: skip
PATHS = {"log_dir": "/var/log/char-rnn", "state_dir": "/var/lib/char-rnn", "char_rnn_dir": "/opt/rnn-karpathy"}


def names(grid, sweep="tiny", base=None):
    return [r["run"] for r in sweep_runs(grid, sweep, base or BASE)]


def test_the_grid_expands_in_a_fixed_order_with_names_from_the_options():
    grid = {"dropout": [0, 0.25], "rnn_size": [128, 256]}  # the dict's order does not matter
    assert names(grid) == [
        "sweep-tiny-rs128-nl2-do0-lr0.002",
        "sweep-tiny-rs128-nl2-do0.25-lr0.002",
        "sweep-tiny-rs256-nl2-do0-lr0.002",
        "sweep-tiny-rs256-nl2-do0.25-lr0.002",
    ]
    run = sweep_runs(grid, "tiny", BASE, PATHS)[1]
    assert run["varied"] == {"rnn_size": 128, "dropout": 0.25}
    assert run["options"]["rnn_size"] == 128 and run["options"]["dropout"] == 0.25
    assert run["options"]["learning_rate"] == 0.002 and run["options"]["max_epochs"] == 50
    assert run["checkpoint_path"] == "/opt/rnn-karpathy/cv/sweep-tiny-rs128-nl2-do0.25-lr0.002"
    assert run["log_path"] == "/var/log/char-rnn/sweep-tiny-rs128-nl2-do0.25-lr0.002.log"
    assert run["state_path"] == "/var/lib/char-rnn/sweep-tiny-rs128-nl2-do0.25-lr0.002.state.json"


def test_a_grid_that_grows_keeps_the_names_of_the_runs_it_had():
    before = names({"rnn_size": [128, 256]})
    after = names({"rnn_size": [128, 256], "learning_rate": [0.002, 0.001], "model": ["lstm", "gru"]})
    assert set(before) <= set(after) and len(after) == 8
    assert "sweep-tiny-gru-rs256-nl2-do0-lr0.001" in after
    # options outside the four named always appear only where they differ from the base
    assert names({"seq_length": [50, 100]}) == [
        "sweep-tiny-rs128-nl2-do0-lr0.002",
        "sweep-tiny-rs128-nl2-do0-lr0.002-sl100",
    ]


def test_names_are_safe_for_systemd_and_the_role_and_stay_unique_when_cut():
    runs = names(
        {"learning_rate": [1e-05, 2e-05], "grad_clip": [2.5], "max_epochs": [0.5], "seed": [1, 2],
         "learning_rate_decay_after": [3], "decay_rate": [0.9], "batch_size": [10]},
        sweep="a-rather-long-sweep-name",
    )  # fmt: skip
    assert len(set(runs)) == 4
    for name in runs:
        assert len(name) <= 64 and "+" not in name
        assert all(c.isalnum() or c in "_.-" for c in name), name
    assert "lr1e-05" in runs[0]


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        (None, "char_rnn_sweep_grid must be a non-empty dict of option: list of values"),
        ({}, "not empty"),
        ([128, 256], "not a list"),
        ({"rnn_size": []}, "char_rnn_sweep_grid: rnn_size is an empty list"),
        ({"rnn_size": 128}, "char_rnn_sweep_grid: rnn_size must be a list of values, not 128 (write rnn_size: [128])"),
        ({"hidden": [1]}, "unknown option(s) hidden; a grid may sweep model, rnn_size"),
        ({"rnn_size": [128, 128.0]}, "rnn_size lists 128 more than once"),
        ({"rnn_size": [12.5]}, "rnn_size must be an integer, not 12.5"),
        ({"rnn_size": [0]}, "rnn_size must be a positive integer, not 0"),
        ({"dropout": [1]}, "dropout must be a number in [0, 1), not 1"),
        ({"learning_rate": ["fast"]}, "learning_rate must be a number, not 'fast'"),
        ({"num_layers": [True]}, "num_layers must be a number, not True"),
        ({"model": ["lstm", "transformer"]}, "model must be lstm, gru or rnn, not 'transformer'"),
    ],
)
def test_a_bad_grid_fails_naming_the_option_and_what_is_allowed(grid, message):
    with pytest.raises(AnsibleFilterError, match="^.*" + __import__("re").escape(message)):
        sweep_runs(grid, "tiny", BASE)


def test_a_bad_sweep_name_or_base_fails():
    with pytest.raises(AnsibleFilterError, match="char_rnn_sweep_name must be"):
        sweep_runs({"rnn_size": [1]}, "-bad/name", BASE)
    with pytest.raises(AnsibleFilterError, match="char_rnn_train_dropout: dropout must be a number in"):
        sweep_runs({"rnn_size": [1]}, "ok", {**BASE, "dropout": "2"})


def host(name, cpus=2, per_run=1, limit=None, others=0, runs=()):
    return {"host": name, "cpus": cpus, "cpus_per_run": per_run, "runs_per_host": limit, "others": others,
            "sweep_runs": list(runs)}  # fmt: skip


GRID4 = {"rnn_size": [16, 32], "dropout": [0, 0.25]}


def test_runs_alternate_over_equal_hosts_in_name_order_whatever_the_play_order():
    runs = sweep_runs(GRID4, "t", BASE)
    first = sweep_placement(runs, [host("b"), host("a")])
    second = sweep_placement(runs, [host("a"), host("b")])
    assert first == second
    n = [r["run"] for r in runs]
    assert first["hosts"]["a"]["runs"] == [n[0], n[2]] and first["hosts"]["b"]["runs"] == [n[1], n[3]]
    assert first["where"] == {n[0]: "a", n[1]: "b", n[2]: "a", n[3]: "b"}
    assert first["new"] == n and first["kept"] == []


def test_the_limit_comes_from_the_cpus_and_can_be_overridden():
    runs = sweep_runs({"rnn_size": [1, 2, 3, 4, 5, 6]}, "t", BASE)
    placed = sweep_placement(runs, [host("big", cpus=8), host("small", cpus=2)])
    assert placed["hosts"]["big"]["limit"] == 8 and placed["hosts"]["small"]["limit"] == 2
    # the lowest load (runs / limit) first, the first by name on a tie: big 0/8, small 0/2, big 1/8, big 2/8,
    # big 3/8, then big 4/8 ties with small 1/2
    assert [len(placed["hosts"][h]["runs"]) for h in ("big", "small")] == [5, 1]
    assert placed["hosts"]["small"]["runs"] == [runs[1]["run"]]
    half = sweep_placement(runs, [host("a", cpus=2, per_run=0.5), host("b", cpus=2, per_run=0.5)])
    assert half["hosts"]["a"]["limit"] == 4
    fixed = sweep_placement(runs, [host("a", cpus=64, limit=1), host("b", cpus=1, limit="5")])
    assert fixed["hosts"]["a"]["limit"] == 1 and len(fixed["hosts"]["b"]["runs"]) == 5
    assert sweep_placement(runs[:1], [host("a", cpus=1, per_run=4)])["hosts"]["a"]["limit"] == 1  # at least 1


def test_other_runs_on_a_host_take_slots():
    runs = sweep_runs(GRID4, "t", BASE)
    placed = sweep_placement(runs, [host("a", cpus=4, others=3), host("b", cpus=4)])
    assert len(placed["hosts"]["a"]["runs"]) == 1 and len(placed["hosts"]["b"]["runs"]) == 3


def test_a_larger_grid_adds_only_new_runs_and_existing_ones_keep_their_hosts():
    runs = sweep_runs(GRID4, "t", BASE)
    n = [r["run"] for r in runs]
    before = sweep_placement(runs, [host("a", cpus=4), host("b", cpus=4)])
    hosts = [host(h, cpus=4, runs=before["hosts"][h]["runs"]) for h in ("a", "b")]
    assert sweep_placement(runs, hosts)["new"] == []  # the same grid again: nothing new, nothing moves
    assert sweep_placement(runs, hosts)["where"] == before["where"]
    bigger = sweep_runs({"rnn_size": [16, 32], "dropout": [0, 0.25, 0.5]}, "t", BASE)
    after = sweep_placement(bigger, hosts)
    assert {r: after["where"][r] for r in n} == before["where"]
    assert after["new"] == ["sweep-t-rs16-nl2-do0.5-lr0.002", "sweep-t-rs32-nl2-do0.5-lr0.002"]
    assert after["where"]["sweep-t-rs16-nl2-do0.5-lr0.002"] == "a"
    assert after["where"]["sweep-t-rs32-nl2-do0.5-lr0.002"] == "b"
    # placed from scratch, rs32-do0 would have gone to b: the kept placement is not a fresh one
    fresh = sweep_placement(bigger, [host("a", cpus=4), host("b", cpus=4)])
    assert fresh["where"]["sweep-t-rs32-nl2-do0-lr0.002"] == "b" != after["where"]["sweep-t-rs32-nl2-do0-lr0.002"]


def test_runs_no_longer_in_the_grid_stay_and_keep_their_slot():
    runs = sweep_runs(GRID4, "t", BASE)
    placed = sweep_placement(runs[:1], [host("a", limit=2, runs=["sweep-t-old"]), host("b", limit=2)])
    assert placed["stale"] == {"a": ["sweep-t-old"]}
    assert placed["where"] == {runs[0]["run"]: "b"}


def test_a_grid_too_large_for_the_fleet_fails_with_each_hosts_load():
    runs = sweep_runs({"rnn_size": [1, 2, 3, 4, 5]}, "t", BASE)
    with pytest.raises(AnsibleFilterError) as failed:
        sweep_placement(runs, [host("a", cpus=2, others=1), host("b", cpus=2)])
    message = str(failed.value)
    assert "has 5 runs: 0 are placed already and 5 new ones need a slot, but the hosts have 3 free" in message
    assert "a: limit 2, 1 other run(s), 0 of this sweep" in message and "char_rnn_sweep_runs_per_host" in message


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"runs_per_host": 0}, "char_rnn_sweep_runs_per_host on a must be a positive integer, not 0"),
        ({"runs_per_host": "two"}, "char_rnn_sweep_runs_per_host on a must be a positive integer"),
        ({"cpus_per_run": 0}, "char_rnn_sweep_cpus_per_run on a must be a number > 0, not 0"),
        ({"cpus_per_run": "x"}, "char_rnn_sweep_cpus_per_run on a must be a number > 0"),
    ],
)
def test_bad_limits_fail_naming_the_variable(bad, message):
    with pytest.raises(AnsibleFilterError, match=__import__("re").escape(message)):
        sweep_placement(sweep_runs(GRID4, "t", BASE), [{**host("a"), **bad}])


# ----------------------------------------------------------------------------------------------- leaderboard


def slurped(data):
    return {"content": base64.b64encode(json.dumps(data).encode()).decode()}


def progress_of(log: str) -> dict:
    """What train_progress returns for a log (the same parser)."""
    return parse_text(log)


def log(iteration: int, total: int, epoch: float, loss: float, checkpoint: str | None = None) -> str:
    lines = [
        "loading data files...",
        "data load done. Number of data batches in train: 100, val: 5, test: 0",
        "creating an lstm with 1 layers",
        f"{iteration}/{total} (epoch {epoch:.3f}), train_loss = {loss:.8f}, grad/param norm = 1.0e-01, "
        "time/batch = 0.0500s",
    ]
    if checkpoint:
        lines[3:3] = ["evaluating loss over split index 2", f"saving checkpoint to {checkpoint}"]
    return "\n".join(lines) + "\n"


def bundle(name, runs):
    """One host's gathered data: runs = [(run, varied, progress, best val loss or None, unit active state)]."""
    return {
        "host": name,
        "manifest": {
            "sweep": "t", "state": "started", "runs": [{"run": r[0], "varied": r[1], "options": {}} for r in runs]
        },
        "states": [
            slurped({"total_iterations": 200, "max_epochs": 2, "segments": [{"offset_iterations": 0}]}) for r in runs
        ],
        "progress": [r[2] for r in runs],
        "services": [{"status": {"ActiveState": r[4], "SubState": "running", "LoadState": "loaded"}} for r in runs],
        "checkpoints": [{"best": {"val_loss": r[3], "path": f"/cv/{r[0]}/lm_{r[0]}_epoch1.00_{r[3]}.t7"}
                         if r[3] is not None else None} for r in runs],
    }  # fmt: skip


def test_the_leaderboard_sorts_every_hosts_runs_by_best_val_loss():
    p1 = progress_of(log(100, 200, 1.0, 1.9, "cv/x/lm_x_epoch1.00_2.0000.t7"))
    p2 = progress_of(log(150, 200, 1.5, 1.7))
    p3 = progress_of(log(3, 200, 0.03, 4.1))
    board = sweep_leaderboard([
        bundle("a", [("sweep-t-a", {"rnn_size": 16, "dropout": 0.25}, p1, 2.0, "active"),
                     ("sweep-t-none", {"rnn_size": 8}, p3, None, "active")]),
        bundle("b", [("sweep-t-b", {"rnn_size": 32, "dropout": 0}, p2, 1.8123, "active")]),
        None,
    ])  # fmt: skip
    rows = board["rows"]
    expected = [(1, "b", "sweep-t-b"), (2, "a", "sweep-t-a"), (3, "a", "sweep-t-none")]
    assert [(r["rank"], r["host"], r["run"]) for r in rows] == expected
    assert board["winner"]["run"] == "sweep-t-b"
    assert rows[0]["iteration"] == 150 and rows[0]["epoch"] == 1.5 and rows[0]["train_loss"] == pytest.approx(1.7)
    assert rows[0]["seconds_per_batch"] == pytest.approx(0.05) and rows[0]["state"] == "active (running)"
    assert rows[1]["options"] == "rnn_size=16 dropout=0.25"
    assert rows[0]["progress"] is p2  # each row keeps its train_progress result
    assert all("progress" not in r for r in board["records"])
    table = board["table"]
    header = "# | host | run | options | iteration | epoch | train loss | best val loss | s/batch | state"
    assert [c.strip() for c in table[0].split(" | ")] == header.split(" | ")
    bars = [[i for i, c in enumerate(line) if c == "|"] for line in table[2:]]
    assert all(b == bars[0] for b in bars) and len(bars[0]) == 9  # aligned columns
    assert "1.8123" in table[2] and table[-1].split(" | ")[7].strip() == "-"
    parsed = list(csv.DictReader(io.StringIO(board["csv"])))
    assert [r["run"] for r in parsed] == ["sweep-t-b", "sweep-t-a", "sweep-t-none"]
    assert parsed[0]["best_val_loss"] == "1.8123" and parsed[2]["best_val_loss"] == ""
    json.dumps(board["records"])  # JSON-serializable


def test_removed_runs_and_whole_run_figures_across_restarts():
    p = progress_of(log(20, 100, 0.2, 1.5))
    b = bundle("a", [("sweep-t-a", {"rnn_size": 16}, p, 1.6, "inactive")])
    segments = [{"offset_iterations": 0}, {"offset_iterations": 100, "offset_epochs": 1.0}]
    b["states"] = [slurped({"total_iterations": 200, "max_epochs": 2, "segments": segments})]
    b["services"] = [{"status": {"ActiveState": "inactive", "SubState": "dead", "LoadState": "not-found"}}]
    row = sweep_leaderboard([b])["rows"][0]
    assert row["iteration"] == 120 and row["epoch"] == pytest.approx(1.2) and row["state"] == "removed"
    b["manifest"]["state"] = "absent"
    b["services"] = [{}]
    b["states"] = [{"failed": False}]  # the state file is gone: the segment's own figures
    row = sweep_leaderboard([b])["rows"][0]
    assert row["state"] == "removed" and row["iteration"] == 20


def test_the_leaderboard_of_real_char_rnn_output(real: Path):
    """A genuine char-rnn log through the same parser: the row carries its figures."""
    text = (real / "train-lstm.log").read_text()
    progress = progress_of(text)
    b = bundle("a", [("sweep-t-a", {"rnn_size": 16}, progress, 3.1, "active")])
    b["states"] = [{}]  # no launcher state: train.lua run by hand
    row = sweep_leaderboard([b])["rows"][0]
    assert progress["iteration"] == row["total_iterations"] == 284 and row["finished"]
    assert row["iteration"] == progress["iteration"] and row["train_loss"] == progress["train_loss"]
