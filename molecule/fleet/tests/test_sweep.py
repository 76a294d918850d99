"""Verify a sweep over two hosts of the fleet (testinfra, Molecule's verifier), FIXTURE upstream.

Runs after test_fleet.py, on two of the hosts converge provisioned (the first Debian 12 one and the
Debian 13 one): sweep.yml with the grid of ../vars/sweep.yml, the placement as README "Sweeps"
documents it, each run's options and unit, the same grid again (0 changed), the leaderboard
against each host's own status.yml, the winner (lowest val loss) fetched and sampled, bad grids
refused on the controller, then the purge. The expected names and placement are worked out here
from the documented rule, not with the collection's filters.

With CHARRNN_SWEEP_FULL=1 (`scripts/test.sh sweep`, opt-in for its time) also: sweep.yml in check
mode, a larger grid that adds only its new runs, and removal that keeps the checkpoints.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from verify_helpers import PROJECT, container, extra_vars, host_names, playbook, recap

VARS_FILE = Path(__file__).resolve().parents[1] / "vars" / "sweep.yml"
VARS = yaml.safe_load(VARS_FILE.read_text())
# a sweep over two platforms: the first Debian 12 host and the Debian 13 one
HOSTS = [next(h for h in host_names() if "debian-12" in h), next(h for h in host_names() if "debian-13" in h)]
SWEEP = VARS["char_rnn_sweep_name"]
GRID = VARS["char_rnn_sweep_grid"]
BIGGER = {**GRID, "dropout": [*GRID["dropout"], 0.5]}
CPUS_PER_RUN = VARS["char_rnn_sweep_cpus_per_run"]
FULL = os.environ.get("CHARRNN_SWEEP_FULL") == "1"
full_only = pytest.mark.skipif(not FULL, reason="CHARRNN_SWEEP_FULL=1 (scripts/test.sh sweep) runs it")
pytestmark = pytest.mark.skipif(
    os.environ.get("CHARRNN_UPSTREAM") != "fixture", reason="the sweep is verified with the FIXTURE upstream"
)
MANIFEST = f"/etc/char-rnn/sweeps/{SWEEP}.json"
CV = "/opt/rnn-karpathy/cv"
TABLE = PROJECT / ".cache" / "molecule" / "fleet-table.txt"  # testbed.py prints it after the run
STATUS_RE = re.compile(
    r"run (?P<run>\S+) \| (?P<state>[a-z]+ \([a-z]+\)) \| iteration (?P<iteration>\d+)/\d+ \| "
    r"epoch (?P<epoch>[\d.]+)/\S+ \| train loss (?P<train_loss>[\d.]+) \| (?P<spb>[\d.]+) s/batch"
)


def run_names(grid: dict) -> list[str]:
    """README: sweep-<name>-rs<rnn_size>-nl<num_layers>-do<dropout>-lr<learning_rate>; rnn_size varies slowest."""
    return [f"sweep-{SWEEP}-rs{rs}-nl1-do{do:g}-lr0.002" for rs in grid["rnn_size"] for do in grid["dropout"]]


@functools.cache
def nproc(name: str) -> int:
    return int(container(name).check_output("nproc"))


def limits() -> dict[str, int]:
    """README: floor(nproc / char_rnn_sweep_cpus_per_run) runs a host."""
    return {h: max(1, math.floor(nproc(h) / CPUS_PER_RUN)) for h in HOSTS}


def place(runs: list[str], kept: dict[str, str]) -> dict[str, str]:
    """README: a run keeps its host; each new one, in grid order, goes to the host with the lowest
    runs/limit that has room, the first by name on a tie."""
    limit = limits()
    where = {r: h for r, h in kept.items() if r in runs}
    for run in runs:
        if run not in where:
            load = {h: sum(1 for v in where.values() if v == h) for h in HOSTS}
            where[run] = min((h for h in HOSTS if load[h] < limit[h]), key=lambda h: (load[h] / limit[h], h))
    return where


def manifests() -> dict[str, dict]:
    out = {}
    for name in HOSTS:
        text = container(name).check_output(f"cat {MANIFEST} 2>/dev/null || true")
        if text.strip():
            out[name] = json.loads(text)
    return out


def placement() -> dict[str, str]:
    return {r["run"]: h for h, m in manifests().items() for r in m["runs"]}


def sweep_play(book: str, *extra: str, json_output: bool = True):
    """A playbook on the sweep's hosts, with its variables."""
    hosts = ",".join(HOSTS)
    return playbook(book, "-e", f"@{VARS_FILE}", "-e", f"rnn_bootstrap_hosts={hosts}", *extra, json_output=json_output)


def grid_arg(grid) -> list[str]:
    return extra_vars({"char_rnn_sweep_grid": grid})


def units_show(where: dict[str, str], prop: str) -> dict[str, str]:
    """systemctl show -p PROP of each run's unit, one command a host."""
    out = {}
    for name in HOSTS:
        runs = [r for r, h in where.items() if h == name]
        if runs:
            units = " ".join(f"char-rnn-train-{r}.service" for r in runs)
            script = f"for u in {units}; do systemctl show -p {prop} --value $u; echo; done"
            shown = container(name).check_output(script)
            out.update(zip(runs, [v.strip() for v in shown.split("\n\n")][: len(runs)], strict=True))
    return out


def wait_finished(where: dict[str, str], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    for name in HOSTS:
        runs = [r for r, h in where.items() if h == name]
        script = (
            "import json, sys; print(all(json.load(open(f'/var/lib/char-rnn/{r}.state.json')).get('finished') "
            f"for r in {runs!r}))"
        )
        while container(name).run(f'python3 -c "{script}"').stdout.strip() != "True":
            if time.monotonic() > deadline:
                log = container(name).run("tail -n 5 /var/log/char-rnn/*.log").stdout
                pytest.fail(f"{runs} on {name} did not finish in {timeout:.0f} s:\n{log}")
            time.sleep(2)


def val_losses(where: dict[str, str]) -> dict[str, list[float]]:
    """Each run's validation losses from its checkpoint names on the host, without the collection's code."""
    out: dict[str, list[float]] = {run: [] for run in where}
    for name in set(where.values()):
        for path in container(name).run(f"cd {CV} && ls -1 */lm_*.t7").stdout.split():
            run, file = path.split("/", 1)
            match = re.match(rf"lm_{re.escape(run)}_epoch[\d.]+_([\d.]+)\.t7$", file)
            if match and where.get(run) == name:
                out[run].append(float(match.group(1)))
    return out


def test_the_grid_is_spread_as_documented():
    run = sweep_play("sweep.yml")
    assert run.returncode == 0 and recap(run.stdout) > 0, run.stdout[-4000:]
    expected = place(run_names(GRID), {})
    assert placement() == expected
    print(f"\nplacement (limits {limits()}):\n" + "\n".join(f"  {r} -> {h}" for r, h in expected.items()))
    # on two equal hosts the runs alternate in grid order
    assert [expected[r] for r in run_names(GRID)] == [HOSTS[0], HOSTS[1], HOSTS[0], HOSTS[1]]


def test_each_run_is_a_service_with_its_options():
    where = placement()
    enabled, active = units_show(where, "UnitFileState"), units_show(where, "ActiveState")
    for run, name in where.items():
        config = json.loads(container(name).check_output(f"cat /etc/char-rnn/{run}.json"))
        rs, do = re.match(r".*-rs(\d+)-nl1-do([\d.]+)-lr", run).groups()
        assert config["options"]["rnn_size"] == int(rs) and config["options"]["dropout"] == float(do)
        assert config["options"]["num_layers"] == 1 and config["options"]["max_epochs"] == 0.5
        assert config["options"]["savefile"] == run and config["checkpoint_path"] == f"{CV}/{run}"
        # threads "share": the host's CPUs over its limit, at least one each
        share = max(1, nproc(name) // limits()[name])
        assert config["threads"] == {"omp": share, "openblas": share, "wait_policy": "PASSIVE"}, config["threads"]
        assert enabled[run] == "enabled" and active[run] == "active", (run, enabled, active)


def test_every_run_finishes_with_checkpoints():
    where = placement()
    wait_finished(where)
    losses = val_losses(where)
    assert all(losses.values()), losses
    # RemainAfterExit: finished, not failed
    assert set(units_show(where, "SubState").values()) == {"exited"}


def test_the_same_grid_again_changes_nothing():
    run = sweep_play("sweep.yml")
    assert run.returncode == 0 and recap(run.stdout) == 0, run.stdout[-4000:]


@full_only
def test_check_mode_of_the_same_grid_changes_nothing():
    run = sweep_play("sweep.yml", "--check")
    assert run.returncode == 0 and recap(run.stdout) == 0, run.stdout[-4000:]


def status_of(name: str, run: str) -> dict:
    out = playbook("status.yml", "-e", f"@{VARS_FILE}", "-e", f"char_rnn_train_run={run}", limit=name)
    assert out.returncode == 0, out.stdout[-3000:]
    match = STATUS_RE.search(out.stdout)
    assert match and match["run"] == run, out.stdout[-3000:]
    return match.groupdict()


def leaderboard(tmp: Path, *extra: str, json_output: bool = True):
    out = sweep_play(
        "leaderboard.yml", "-e", f"char_rnn_leaderboard_csv={tmp}/board.csv", "-e",
        f"char_rnn_leaderboard_json={tmp}/board.json", "-e", f"char_rnn_fetch_dest={tmp}/ckpt", "-e",
        f"char_rnn_sample_dest={tmp}/samples", "-e", "char_rnn_sample_length=200", *extra, json_output=json_output,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-4000:]
    return out, json.loads((tmp / "board.json").read_text())["rows"]


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    """One leaderboard.yml run, printed as the user reads it: (its output, the JSON rows, its folder)."""
    tmp = tmp_path_factory.mktemp("leaderboard")
    return (*leaderboard(tmp, json_output=False), tmp)


def test_the_leaderboard_matches_each_hosts_status(board):
    out, rows, tmp_path = board
    where = placement()
    assert {r["run"]: r["host"] for r in rows} == where
    # best first; the same order in the CSV
    losses = [r["best_val_loss"] for r in rows]
    assert losses == sorted(losses) and None not in losses
    csv_runs = [line.split(",")[2] for line in (tmp_path / "board.csv").read_text().splitlines()[1:]]
    assert csv_runs == [r["run"] for r in rows]
    with ThreadPoolExecutor(max_workers=4) as pool:
        statuses = dict(zip(where, pool.map(lambda r: status_of(where[r], r), where), strict=True))
    losses = val_losses(where)
    for row in rows:
        status = statuses[row["run"]]
        assert row["iteration"] == int(status["iteration"]), (row, status)
        assert f"{row['epoch']:.2f}" == status["epoch"], (row, status)
        assert f"{row['train_loss']:.4f}" == status["train_loss"], (row, status)
        assert f"{row['seconds_per_batch']:.3f}" == status["spb"], (row, status)
        assert row["state"] == status["state"] == "active (finished)", (row, status)
        assert row["best_val_loss"] == min(losses[row["run"]]), row
        assert row["options"] == f"rnn_size={row['varied']['rnn_size']} dropout={row['varied']['dropout']:g}"
    # the printed table, for testbed.py's report and the README
    printed = out.stdout.split("TASK [Print the leaderboard]")[1].split("TASK [")[0]
    TABLE.parent.mkdir(parents=True, exist_ok=True)
    TABLE.write_text("leaderboard.yml on the test fleet (FIXTURE upstream: the losses are made up)\n" + printed.strip()
                     + "\n")  # fmt: skip
    assert "best val loss" in printed and all(r["run"] in printed for r in rows)


def test_the_winner_has_the_lowest_val_loss_and_is_fetched_and_sampled(board):
    out, rows, tmp_path = board
    where = placement()
    every = {(name, run): min(v) for run, v in val_losses(where).items() for name in [where[run]]}
    lowest = min(every.values())
    # on a tie (the FIXTURE's made-up losses ignore dropout), the first by host, then run
    host, run = min(key for key, value in every.items() if value == lowest)
    assert (rows[0]["host"], rows[0]["run"], rows[0]["best_val_loss"]) == (host, run, lowest)
    fetched = list((tmp_path / "ckpt" / host / run).glob("*.t7"))
    assert [f.name for f in fetched] == [Path(rows[0]["best_checkpoint"]).name], out.stdout[-3000:]
    remote = container(host).file(rows[0]["best_checkpoint"])
    assert remote.sha256sum == hashlib.sha256(fetched[0].read_bytes()).hexdigest()
    samples = list((tmp_path / "samples" / host).glob("*.txt"))
    assert len(samples) == 1 and len(samples[0].read_text()) >= 200, out.stdout[-3000:]
    assert f"winner: {run} on {host}" in out.stdout


@full_only
def test_a_larger_grid_adds_only_the_new_runs():
    before = placement()
    invocations = units_show(before, "InvocationID")
    # check mode first: it says what would change and starts nothing
    check = sweep_play("sweep.yml", "--check", *grid_arg(BIGGER))
    assert check.returncode == 0 and recap(check.stdout) > 0, check.stdout[-4000:]
    assert placement() == before
    run = sweep_play("sweep.yml", *grid_arg(BIGGER))
    assert run.returncode == 0, run.stdout[-4000:]
    after = placement()
    assert {r: after[r] for r in before} == before  # existing runs keep their hosts
    assert after == place(run_names(BIGGER), before)
    new = sorted(set(after) - set(before))
    assert new == sorted(set(run_names(BIGGER)) - set(run_names(GRID)))
    # a fresh placement would put rs32-do0 elsewhere: the kept one is not a recomputation
    assert place(run_names(BIGGER), {}) != after
    assert units_show(before, "InvocationID") == invocations  # the old runs were not touched
    assert set(units_show({r: after[r] for r in new}, "ActiveState").values()) == {"active"}
    again = sweep_play("sweep.yml", *grid_arg(BIGGER))
    assert again.returncode == 0 and recap(again.stdout) == 0, again.stdout[-4000:]
    wait_finished({r: after[r] for r in new})


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ({"rnn_size": []}, "char_rnn_sweep_grid: rnn_size is an empty list"),
        ({"hidden_size": [16]}, "char_rnn_sweep_grid: unknown option(s) hidden_size; a grid may sweep model, rnn_size"),
        ({"rnn_size": 16}, "char_rnn_sweep_grid: rnn_size must be a list of values, not 16"),
        ({"dropout": [0.5, 1.5]}, "char_rnn_sweep_grid: dropout must be a number in [0, 1), not 1.5"),
    ],
)
def test_a_bad_grid_fails_before_any_host_is_touched(grid, message):
    run = sweep_play("sweep.yml", *grid_arg(grid))
    assert run.returncode != 0, run.stdout[-3000:]
    assert message in run.stdout, run.stdout[-3000:]
    # it failed in the first tasks, on the controller: nothing ran on the hosts
    assert recap(run.stdout) == 0 and "Read this host's record" not in run.stdout


@full_only
def test_removing_the_sweep_keeps_the_checkpoints(tmp_path):
    where = placement()
    kept = val_losses(where)
    run = sweep_play("sweep.yml", "-e", "char_rnn_sweep_state=absent")
    assert run.returncode == 0 and recap(run.stdout) > 0, run.stdout[-4000:]
    assert set(units_show(where, "LoadState").values()) == {"not-found"}
    for name in HOSTS:
        assert container(name).run("ls /etc/char-rnn/*.json").rc != 0  # the runs' configurations are gone
    assert val_losses(where) == kept  # every checkpoint is still there
    assert {m["state"] for m in manifests().values()} == {"absent"}
    again = sweep_play("sweep.yml", "-e", "char_rnn_sweep_state=absent")
    assert again.returncode == 0 and recap(again.stdout) == 0, again.stdout[-4000:]
    # the leaderboard still reads the removed runs' checkpoints and logs
    rows = leaderboard(tmp_path, "-e", "char_rnn_leaderboard_fetch=false")[1]
    assert {r["run"] for r in rows} == set(where) and {r["state"] for r in rows} == {"removed"}


def test_purge_removes_the_runs_and_deletes_their_checkpoints():
    where = placement()
    run = sweep_play("sweep.yml", "-e", "char_rnn_sweep_state=absent", "-e", "char_rnn_sweep_purge=true")
    assert run.returncode == 0, run.stdout[-4000:]
    assert set(units_show(where, "LoadState").values()) == {"not-found"}
    for name in HOSTS:
        runs = " ".join(f"{CV}/{r} /var/log/char-rnn/{r}.log /var/lib/char-rnn/{r}.state.json"
                        for r, h in where.items() if h == name)  # fmt: skip
        assert container(name).run(f"ls -d {runs}").stdout.strip() == ""
    assert manifests() == {}
