# Copyright: rnn_bootstrap maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A fleet sweep of char-rnn runs: the grid's runs and their names, their placement on the hosts, and the
leaderboard. Controller-side code behind the filters sweep_runs, sweep_placement and sweep_leaderboard
(playbooks/sweep.yml and playbooks/leaderboard.yml).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import itertools
import json
import math
import re
from collections.abc import Callable
from typing import Any

from ansible.errors import AnsibleFilterError

# The train.lua options a grid may vary, in the order they appear in run names and in the expansion
# (the first one varies slowest): (option, short name in the run name, kind, check, what is allowed).
_Check = Callable[[Any], bool]
OPTIONS: tuple[tuple[str, str, str, _Check, str], ...] = (
    ("model", "", "str", lambda v: v in ("lstm", "gru", "rnn"), "lstm, gru or rnn"),
    ("rnn_size", "rs", "int", lambda v: v > 0, "a positive integer"),
    ("num_layers", "nl", "int", lambda v: v > 0, "a positive integer"),
    ("dropout", "do", "float", lambda v: 0 <= v < 1, "a number in [0, 1)"),
    ("learning_rate", "lr", "float", lambda v: v > 0, "a number > 0"),
    ("seq_length", "sl", "int", lambda v: v > 0, "a positive integer"),
    ("batch_size", "bs", "int", lambda v: v > 0, "a positive integer"),
    ("learning_rate_decay", "lrd", "float", lambda v: v > 0, "a number > 0"),
    ("learning_rate_decay_after", "lrda", "float", lambda v: v >= 0, "a number >= 0"),
    ("decay_rate", "dr", "float", lambda v: 0 < v < 1, "a number in (0, 1)"),
    ("grad_clip", "gc", "float", lambda v: v > 0, "a number > 0"),
    ("max_epochs", "me", "float", lambda v: v > 0, "a number > 0"),
    ("seed", "sd", "int", lambda v: v >= 0, "an integer >= 0"),
)
OPTION_NAMES = tuple(o[0] for o in OPTIONS)
# Always in the name, whether swept or not: a grid that later sweeps one of these too keeps the
# names (and so the hosts and checkpoints) of the runs it already had.
NAMED_ALWAYS = ("rnn_size", "num_layers", "dropout", "learning_rate")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
MAX_SWEEP_NAME = 32
MAX_RUN_NAME = 64  # the char_rnn_train role's limit (unit char-rnn-train-<run>.service)


def _number(option: str, kind: str, value: Any, where: str) -> int | float | str:
    if kind == "str":
        if not isinstance(value, str):
            raise AnsibleFilterError(f"{where}: {option} must be a string, not {value!r}")
        return value
    if isinstance(value, bool) or value is None or isinstance(value, (list, dict)):
        raise AnsibleFilterError(f"{where}: {option} must be a number, not {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise AnsibleFilterError(f"{where}: {option} must be a number, not {value!r}") from None
    if not math.isfinite(number):
        raise AnsibleFilterError(f"{where}: {option} must be a finite number, not {value!r}")
    if kind == "int":
        if number != int(number):
            raise AnsibleFilterError(f"{where}: {option} must be an integer, not {value!r}")
        return int(number)
    return int(number) if number.is_integer() else number


def normalize(option: str, value: Any, where: str) -> int | float | str:
    """One option's value, checked and in the form it is written to the run's configuration."""
    spec = {o[0]: o for o in OPTIONS}[option]
    kind, check, allowed = spec[2:]
    number = _number(option, kind, value, where)
    if not check(number):
        raise AnsibleFilterError(f"{where}: {option} must be {allowed}, not {value!r}")
    return number


def format_value(value: int | float | str) -> str:
    """0.25 -> 0.25, 0 -> 0, 1e-05 -> 1e-05: exact (repr) and free of '+' (not allowed in unit names)."""
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return repr(value).replace("+", "")


def run_name(sweep: str, options: dict[str, Any], base: dict[str, Any]) -> str:
    """sweep-<sweep>-rs128-nl2-do0.25-lr0.002[-<other options that differ from the base>]."""
    parts = []
    for spec in OPTIONS:
        option, short = spec[:2]
        if option in NAMED_ALWAYS or options[option] != base[option]:
            parts.append(short + format_value(options[option]))
    name = "-".join([f"sweep-{sweep}", *parts])
    if len(name) > MAX_RUN_NAME:  # still unique and stable: the cut name and a hash of the whole one
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        name = name[: MAX_RUN_NAME - 9].rstrip("-.") + "-" + digest
    return name


def check_sweep_name(sweep: Any) -> str:
    if not isinstance(sweep, str) or not NAME_RE.match(sweep) or len(sweep) > MAX_SWEEP_NAME:
        raise AnsibleFilterError(
            f"char_rnn_sweep_name must be letters, digits, '_', '.', '-' (starting with a letter or digit, "
            f"at most {MAX_SWEEP_NAME}), not {sweep!r}: it starts the name of every run of the sweep"
        )
    return sweep


def sweep_runs(grid: Any, sweep: Any, base: Any, paths: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Every combination of the grid's values as a run: its name, all its options, the swept ones, and with
    ``paths`` (log_dir, state_dir, char_rnn_dir) where the char_rnn_train role keeps its log, state and
    checkpoints (cv/<run>)."""
    sweep = check_sweep_name(sweep)
    if not isinstance(base, dict):
        raise AnsibleFilterError(f"sweep_runs: the base options must be a dict, not {type(base).__name__}")
    missing = [o for o in OPTION_NAMES if o not in base]
    if missing:
        raise AnsibleFilterError(f"sweep_runs: the base options lack {', '.join(missing)}")
    base = {o: normalize(o, base[o], f"char_rnn_train_{o}") for o in OPTION_NAMES}
    example = "e.g. {rnn_size: [128, 256], dropout: [0, 0.25]}"
    if not isinstance(grid, dict) or not grid:
        what = "empty" if isinstance(grid, dict) else f"a {type(grid).__name__}"
        raise AnsibleFilterError(f"char_rnn_sweep_grid must be a non-empty dict of option: list of values ({example}), "
                                 f"not {what}")  # fmt: skip
    unknown = sorted(str(k) for k in grid if k not in OPTION_NAMES)
    if unknown:
        raise AnsibleFilterError(
            f"char_rnn_sweep_grid: unknown option(s) {', '.join(unknown)}; a grid may sweep {', '.join(OPTION_NAMES)}"
        )
    axes = []
    for option in OPTION_NAMES:
        if option not in grid:
            continue
        values = grid[option]
        if not isinstance(values, list):
            raise AnsibleFilterError(
                f"char_rnn_sweep_grid: {option} must be a list of values, not {values!r} (write {option}: [{values}])"
            )
        if not values:
            raise AnsibleFilterError(f"char_rnn_sweep_grid: {option} is an empty list: give it at least one value")
        normalized = [normalize(option, v, "char_rnn_sweep_grid") for v in values]
        twice = sorted({format_value(v) for v in normalized if normalized.count(v) > 1})
        if twice:
            raise AnsibleFilterError(f"char_rnn_sweep_grid: {option} lists {', '.join(twice)} more than once")
        axes.append([(option, v) for v in normalized])
    runs = []
    for combination in itertools.product(*axes):
        varied = dict(combination)
        options = {**base, **varied}
        name = run_name(sweep, options, base)
        run = {"run": name, "options": options, "varied": varied}
        if paths:
            run.update({
                "log_path": f"{paths['log_dir']}/{name}.log",
                "state_path": f"{paths['state_dir']}/{name}.state.json",
                "checkpoint_path": f"{paths['char_rnn_dir']}/cv/{name}",
            })  # fmt: skip
        runs.append(run)
    names = [r["run"] for r in runs]
    if len(set(names)) != len(names):  # only a hash collision of cut names could do this
        raise AnsibleFilterError(f"sweep_runs: two runs of the grid got the same name: {names}")
    return runs


def host_limit(host: dict[str, Any]) -> int:
    """Runs a host takes: char_rnn_sweep_runs_per_host when set, else floor(CPUs / char_rnn_sweep_cpus_per_run),
    at least 1."""
    name = host.get("host")
    override = host.get("runs_per_host")
    if override not in (None, ""):
        if isinstance(override, bool) or not str(override).isdigit() or int(override) < 1:
            raise AnsibleFilterError(f"char_rnn_sweep_runs_per_host on {name} must be a positive integer, "
                                     f"not {override!r}")  # fmt: skip
        return int(override)
    try:
        per_run = float(host.get("cpus_per_run", 1))
    except (TypeError, ValueError):
        per_run = -1.0
    if isinstance(host.get("cpus_per_run"), bool) or not per_run > 0:
        raise AnsibleFilterError(
            f"char_rnn_sweep_cpus_per_run on {name} must be a number > 0, not {host.get('cpus_per_run')!r}"
        )
    cpus = int(host.get("cpus") or 1)
    return max(1, math.floor(cpus / per_run + 1e-9))


def sweep_placement(runs: list[dict[str, Any]], hosts: list[dict[str, Any]]) -> dict[str, Any]:
    """Which host runs which run of the grid.

    ``hosts``: one dict per host of the play: ``host``, ``cpus``, ``cpus_per_run``, ``runs_per_host`` (or null),
    ``others`` (char-rnn runs configured there that are not this sweep's) and ``sweep_runs`` (this sweep's runs
    its manifest lists). A run already on a host stays there. Each new run, in grid order, goes to the host with
    the lowest load (runs / limit, all its runs counted), the first by name on a tie, among hosts with a free
    slot. Hosts are taken sorted by name, so the play's order does not matter.
    """
    if not hosts:
        raise AnsibleFilterError("sweep_placement: no hosts")
    names = [r["run"] for r in runs]
    table: dict[str, dict[str, Any]] = {}
    where: dict[str, str] = {}
    for host in sorted(hosts, key=lambda h: str(h["host"])):
        limit = host_limit(host)
        entry = {"limit": limit, "others": int(host.get("others") or 0), "kept": [], "new": [], "stale": []}
        for run in host.get("sweep_runs") or []:
            if run in names and run not in where:
                where[run] = host["host"]
                entry["kept"].append(run)
            else:  # no longer in the grid (or, impossibly, on two hosts): left as it is, listed
                entry["stale"].append(run)
        table[host["host"]] = entry

    def load(h: str) -> int:
        e = table[h]
        return e["others"] + len(e["kept"]) + len(e["new"]) + len(e["stale"])

    new = [n for n in names if n not in where]
    free = sum(max(0, e["limit"] - load(h)) for h, e in table.items())
    if len(new) > free:
        detail = "; ".join(
            f"{h}: limit {e['limit']}, {e['others']} other run(s), {len(e['kept']) + len(e['stale'])} of this sweep"
            for h, e in table.items()
        )
        raise AnsibleFilterError(
            f"char_rnn_sweep_grid has {len(names)} runs: {len(names) - len(new)} are placed already and {len(new)} "
            f"new ones need a slot, but the hosts have {free} free ({detail}). Add hosts, lower "
            "char_rnn_sweep_cpus_per_run, or set char_rnn_sweep_runs_per_host"
        )
    order = list(table)
    for run in new:
        candidates = [h for h in order if load(h) < table[h]["limit"]]
        best = min(candidates, key=lambda h: (load(h) / table[h]["limit"], order.index(h)))
        table[best]["new"].append(run)
        where[run] = best
    for entry in table.values():
        entry["runs"] = [n for n in names if n in entry["kept"] or n in entry["new"]]
    return {
        "hosts": table,
        "where": {n: where[n] for n in names},
        "new": new,
        "kept": [n for n in names if n not in new],
        "stale": {h: e["stale"] for h, e in table.items() if e["stale"]},
    }


# ---------------------------------------------------------------------------------------------- leaderboard

COLUMNS = ("rank", "host", "run", "options", "iteration", "epoch", "train_loss", "best_val_loss", "seconds_per_batch",
           "state")  # fmt: skip
HEADERS = ("#", "host", "run", "options", "iteration", "epoch", "train loss", "best val loss", "s/batch", "state")


def _result(results: list[dict[str, Any]] | None, index: int) -> dict[str, Any]:
    if results and index < len(results) and isinstance(results[index], dict):
        return results[index]
    return {}


def _slurped_json(result: dict[str, Any]) -> dict[str, Any]:
    """The JSON file ansible.builtin.slurp read, or {} when it was missing or unreadable."""
    try:
        data = json.loads(base64.b64decode(result["content"]))
    except (KeyError, TypeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _options_text(varied: dict[str, Any]) -> str:
    """The swept options in the order of the run names (a record written with sorted keys loses it)."""
    return " ".join(f"{k}={format_value(varied[k])}" for k in OPTION_NAMES if k in varied)


def host_rows(bundle: dict[str, Any], train_status: Callable[..., dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of one host from what leaderboard.yml gathered there (register results, in manifest order)."""
    manifest = bundle.get("manifest") or {}
    rows = []
    for index, entry in enumerate(manifest.get("runs") or []):
        state = _slurped_json(_result(bundle.get("states"), index))
        progress = _result(bundle.get("progress"), index)
        service = _result(bundle.get("services"), index)
        found = _result(bundle.get("checkpoints"), index)
        unit_status = service.get("status") or {}
        status = train_status(progress, entry["run"], state, unit_status)
        removed = manifest.get("state") == "absent" or unit_status.get("LoadState") == "not-found"
        best = found.get("best") or {}
        rows.append({
            "host": bundle.get("host"),
            "run": entry["run"],
            "options": _options_text(entry.get("varied") or {}),
            "varied": entry.get("varied") or {},
            "all_options": entry.get("options") or {},
            "iteration": status["iteration"],
            "total_iterations": status["total_iterations"],
            "epoch": status["epoch"],
            "max_epochs": status["max_epochs"],
            "train_loss": status["train_loss"],
            "best_val_loss": best.get("val_loss"),
            "best_checkpoint": best.get("path"),
            "last_val_loss": status["val_loss"],
            "seconds_per_batch": status["seconds_per_batch"],
            "state": "removed" if removed else status["service"],
            "finished": status["finished"],
            "errors": status["errors"],
            "stopped": status["stopped"],
            "status_line": status["line"],
            "progress": progress,
        })  # fmt: skip
    return rows


def _cell(value: Any, column: str) -> str:
    if value is None or value == "":
        return "-"
    if column in ("train_loss", "best_val_loss"):
        return f"{value:.4f}"
    if column == "seconds_per_batch":
        return f"{value:.3f}"
    if column == "epoch":
        return f"{value:.2f}"
    return str(value)


def sweep_leaderboard(bundles: list[dict[str, Any]], train_status: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    rows = [row for bundle in bundles or [] if bundle for row in host_rows(bundle, train_status)]
    rows.sort(key=lambda r: (r["best_val_loss"] is None, r["best_val_loss"] or 0.0, str(r["host"]), r["run"]))
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    cells = [[_cell(row[c], c) for c in COLUMNS] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(HEADERS)]
    numeric = {"rank", "iteration", "epoch", "train_loss", "best_val_loss", "seconds_per_batch"}

    def line(values: list[str] | tuple[str, ...]) -> str:
        return " | ".join(
            v.rjust(w) if c in numeric else v.ljust(w) for v, w, c in zip(values, widths, COLUMNS, strict=True)
        ).rstrip()

    table = [line(HEADERS), "-+-".join("-" * w for w in widths)] + [line(r) for r in cells]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow(["" if row[c] is None else row[c] for c in COLUMNS])
    winner = next((r for r in rows if r["best_val_loss"] is not None and r["best_checkpoint"]), None)
    records = [{k: v for k, v in row.items() if k != "progress"} for row in rows]
    return {"rows": rows, "records": records, "table": table, "csv": buffer.getvalue(), "winner": winner}
