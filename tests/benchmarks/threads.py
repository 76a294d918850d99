"""Thread settings for char-rnn on this host: prints s/batch per configuration, idle and loaded.

NOT a timed test: it prints figures. Needs a REAL Torch7 and char-rnn (README: "Benchmarks"):

    python3 tests/benchmarks/threads.py --th /opt/real-torch/bin/th --char-rnn /opt/real-char-rnn

Every configuration runs the same th binary on char-rnn's default model (lstm, rnn_size 128,
2 layers, seq_length 50, batch_size 50, tinyshakespeare) for --batches iterations; rounds
alternate the configurations so that load from other work on the host spreads over all of
them. Two conditions, each round running both: "idle" (the host as it is) and "loaded" (--hogs
CPU hogs, one per CPU by default, started by this script beside each run and stopped after it;
each hog also ends by itself after --hog-seconds or when this script dies). Every run, the
service's included, runs at --nice (the unit's Nice=5) and the hogs at nice 0, as other work
on a training host would. A direct run still going after --max-seconds (a setting that
collapses under load) is stopped and timed on the batches it did. The OpenMP build of Debian's
OpenBLAS is loaded through LD_LIBRARY_PATH, so both builds run in one session without touching
update-alternatives.

The "service (probe)" row is the role's launcher (roles/char_rnn_train/files/char_rnn_launcher.py,
the unit's ExecStart) choosing its settings itself, in that condition; it must be within 10 %
of the best row. The launcher keeps its choice until its speed watch sees the run's time/batch
drift from the probe's figure (README), so the summary also reads the row of the setting it
chose in the *other* condition: what a run probed on a quiet host does once loaded (or the
reverse) until the watch probes again. Every setting the launcher may choose is a row.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LAUNCHER = REPO / "roles" / "char_rnn_train" / "files" / "char_rnn_launcher.py"
MODULE_UTILS = REPO / "plugins" / "module_utils"
OPENMP_DIR = "/usr/lib/x86_64-linux-gnu/openblas-openmp"
PROGRESS_RE = re.compile(
    r"(\d+)/(\d+) \(epoch [^)]*\), train_loss = \S+, grad/param norm = \S+, time/batch = ([\d.]+)s"
)
THREAD_VARS = (
    "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "GOTO_NUM_THREADS",
    "OPENBLAS_THREAD_TIMEOUT", "LD_LIBRARY_PATH",
)  # fmt: skip
SERVICE = "service (probe)"
CONDITIONS = ("idle", "loaded")
# A CPU hog: pure user time, ends by itself after its deadline or when its parent (this script) dies.
HOG = (
    "import os, time\n"
    "end, parent = time.monotonic() + {seconds}, os.getppid()\n"
    "while time.monotonic() < end and os.getppid() == parent:\n"
    "    sum(range(10000))\n"
)


def load_threads():
    """The launcher's thread selection (plugins/module_utils/char_rnn_threads.py), imported as on a host."""
    sys.path.insert(0, str(MODULE_UTILS))  # the role installs it and the rest next to the launcher
    return importlib.import_module("char_rnn_threads")


def describe(env: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(env.items())) or "defaults"


def label(env: dict[str, str]) -> str:
    short = {"OMP_NUM_THREADS": "OMP", "OPENBLAS_NUM_THREADS": "OPENBLAS", "GOMP_SPINCOUNT": "GOMP_SPINCOUNT"}
    parts = [f"{short[k]}={env[k]}" for k in short if k in env]
    return " ".join(parts + [env[k] for k in ("OMP_WAIT_POLICY",) if k in env]) or "defaults"


def configurations(th: str, cpus: int) -> list[tuple[str, dict[str, str]]]:
    """The rows: the usual suspects, then every setting the launcher's probe may choose."""
    n = str(cpus)
    openmp = {"LD_LIBRARY_PATH": OPENMP_DIR}
    rows = [
        ("pthread OpenBLAS, defaults", {}),
        (f"pthread, OMP={n} PASSIVE", {"OMP_NUM_THREADS": n, "OMP_WAIT_POLICY": "PASSIVE"}),
        ("pthread, OPENBLAS_NUM_THREADS=1", {"OPENBLAS_NUM_THREADS": "1"}),
        ("pthread, OMP_NUM_THREADS=1", {"OMP_NUM_THREADS": "1"}),
        (
            f"pthread, OMP={n} OPENBLAS=1 PASSIVE",
            {"OMP_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"},
        ),
        ("OpenMP OpenBLAS, defaults", dict(openmp)),
        (f"OpenMP OpenBLAS, OMP={n} PASSIVE", {**openmp, "OMP_NUM_THREADS": n, "OMP_WAIT_POLICY": "PASSIVE"}),
    ]
    envs = [env for _name, env in rows]
    for env in load_threads().probe_candidates(th, cpus):
        if env not in envs:
            rows.append((f"pthread, {label(env)}", env))
            envs.append(env)
    return rows


def ntrain_of(corpus: Path, batch_size: int, seq_length: int) -> int:
    sys.path.insert(0, str(MODULE_UTILS))
    import corpus as corpus_utils  # plugins/module_utils/corpus.py

    return corpus_utils.splits(corpus.stat().st_size, batch_size, seq_length)["train_batches"]


def seconds_per_batch(text: str, skip: int) -> tuple[float, int]:
    times = [float(m.group(3)) for m in PROGRESS_RE.finditer(text)]
    kept = times[skip:] or times
    if not kept:
        raise RuntimeError("no progress line in train.lua's output:\n" + text[-2000:])
    return statistics.median(kept), len(times)


def base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in THREAD_VARS}


@contextlib.contextmanager
def load(condition: str, args):
    """Nothing when idle; --hogs CPU hogs (nice 0) for as long as the block runs when loaded."""
    hogs = []
    try:
        if condition == "loaded":
            code = HOG.format(seconds=args.hog_seconds)
            hogs = [subprocess.Popen([sys.executable, "-c", code]) for _hog in range(args.hogs)]
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def run_in(args, cmd: list[str], env: dict[str, str], condition: str, cwd, cap: float) -> tuple[int | None, str]:
    """(exit status or None when stopped after ``cap`` seconds, standard output so far)."""
    with load(condition, args):
        try:
            proc = subprocess.run(
                cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=cap,
                preexec_fn=(lambda: os.nice(args.nice)) if args.nice else None,
            )  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout or b""
            return None, out.decode("utf-8", "replace") if isinstance(out, bytes) else out
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-1500:]}\n{proc.stderr[-1500:]}")
    return proc.returncode, proc.stdout


def run_direct(args, env_extra: dict[str, str], workdir: Path, condition: str = "idle") -> float:
    """Median s/batch; a setting that collapses is stopped after --max-seconds and timed on what it did."""
    epochs = (args.batches + 0.5) / args.ntrain  # loop runs args.batches times, never hits the final eval
    cmd = [
        args.th, "train.lua", "-gpuid", "-1", "-max_epochs", repr(epochs), "-eval_val_every", "1000000",
        "-checkpoint_dir", str(workdir / "cv"), "-savefile", "bench",
    ]  # fmt: skip
    if args.stdbuf:  # line-buffered, as the launcher runs it, so that a stopped run's lines are not lost
        cmd = [args.stdbuf, "-oL", *cmd]
    code, out = run_in(args, cmd, {**base_env(), **env_extra}, condition, args.char_rnn, args.max_seconds)
    if code is None and not PROGRESS_RE.search(out):
        return args.max_seconds  # not one batch in max_seconds: a lower bound
    return seconds_per_batch(out, args.skip)[0]


def run_service(args, workdir: Path, run: str, condition: str) -> tuple[float, dict[str, str]]:
    """The launcher with threads=probe on a fresh run: (s/batch of its training, the settings it chose)."""
    config = {
        "run": run,
        "char_rnn_dir": str(args.char_rnn),
        "th": args.th,
        "log_path": str(workdir / f"{run}.log"),
        "state_path": str(workdir / f"{run}.state.json"),
        "checkpoint_path": str(workdir / f"cv-{run}"),
        "unit": f"char-rnn-train-{run}.service",
        "threads": "probe",
        "environment": {},
        "options": {
            "data_dir": "data/tinyshakespeare", "rnn_size": 128, "num_layers": 2, "model": "lstm",
            "learning_rate": 0.002, "learning_rate_decay": 0.97, "learning_rate_decay_after": 10.0,
            "decay_rate": 0.95, "dropout": 0.0, "seq_length": 50, "batch_size": 50,
            "max_epochs": args.batches / args.ntrain, "grad_clip": 5.0, "train_frac": 0.95, "val_frac": 0.05,
            "seed": 123, "print_every": 1, "eval_val_every": 1000000, "checkpoint_dir": str(workdir / f"cv-{run}"),
            "savefile": run, "gpuid": -1,
        },
    }  # fmt: skip
    path = workdir / f"{run}.json"
    path.write_text(json.dumps(config))
    # the role installs checkpoints.py and corpus.py next to the launcher; here they are in module_utils
    env = {**base_env(), "PYTHONPATH": str(MODULE_UTILS)}
    _code, out = run_in(args, [sys.executable, str(LAUNCHER), str(path)], env, condition, None, args.hog_seconds)
    chosen = re.search(r"threads \((.*?)\): (.*)", out)
    if not chosen:
        raise RuntimeError("no 'threads' line in the launcher's output:\n" + out[-2000:])
    # only train.lua's lines after the launcher's "threads" line: the training with the choice
    spb = seconds_per_batch(out[chosen.end() :], args.skip)[0]
    return spb, json.loads(workdir.joinpath(f"{run}.state.json").read_text())["threads"]["env"]


def print_table(args, condition: str, rows: dict[str, float], cpus: int) -> tuple[str, float]:
    best_name = min((n for n in rows if n != SERVICE), key=rows.get)
    best = rows[best_name]
    what = f"{args.hogs} CPU hog(s) at nice 0 beside each run" if condition == "loaded" else "no hog"
    print(f"\n{condition.upper()} ({what}); char-rnn default model, {args.batches} batches x {args.rounds} rounds")
    print(f"per row (median), {cpus} CPUs, nice {args.nice}, th {args.th}")
    print(f"{'configuration':<58} {'s/batch':>8} {'x best':>7}")
    for name, value in rows.items():
        print(f"{name:<58} {value:8.4f} {value / best:7.2f}")
    return best_name, best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--th", default="/opt/real-torch/bin/th")
    parser.add_argument("--char-rnn", type=Path, default=Path("/opt/real-char-rnn"))
    parser.add_argument("--batches", type=int, default=20, help="iterations per configuration and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--skip", type=int, default=3, help="first iterations left out (warm-up)")
    parser.add_argument("--conditions", default=",".join(CONDITIONS), help="idle, loaded or both (comma-separated)")
    parser.add_argument("--hogs", type=int, default=0, help="CPU hogs when loaded (default: one per CPU)")
    parser.add_argument("--hog-seconds", type=int, default=600, help="a hog (and a run) ends after this at most")
    parser.add_argument("--nice", type=int, default=5, help="niceness of every run (the unit's Nice=5)")
    parser.add_argument(
        "--max-seconds", type=float, default=60.0, help="a direct run is stopped after this and timed on what it did"
    )
    args = parser.parse_args()
    args.stdbuf = shutil.which("stdbuf")
    conditions = [c for c in args.conditions.split(",") if c]
    if not conditions or set(conditions) - set(CONDITIONS):
        parser.error(f"--conditions: one or more of {CONDITIONS}")
    args.ntrain = ntrain_of(args.char_rnn / "data" / "tinyshakespeare" / "input.txt", 50, 50)
    cpus = len(os.sched_getaffinity(0))
    args.hogs = args.hogs or cpus
    configs = configurations(args.th, cpus)
    results = {c: {name: [] for name, _env in [*configs, (SERVICE, {})]} for c in conditions}
    chosen: dict[str, Counter] = {c: Counter() for c in conditions}
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="char-rnn-bench-") as tmp:
        workdir = Path(tmp)
        # One short run first: char-rnn preprocesses the corpus (data.t7, vocab.t7) on first use.
        run_direct(argparse.Namespace(**{**vars(args), "batches": 2, "skip": 0, "max_seconds": 600}), {}, workdir)
        for round_no in range(1, args.rounds + 1):
            for condition in conditions:
                for name, env in configs:
                    results[condition][name].append(run_direct(args, env, workdir, condition))
                    spb = results[condition][name][-1]
                    print(f"  round {round_no} {condition:<6}: {name:<58} {spb:.4f} s/batch", flush=True)
                spb, env = run_service(args, workdir, f"bench-{condition}-{round_no}", condition)
                results[condition][SERVICE].append(spb)
                chosen[condition][describe(env)] += 1
                print(f"  round {round_no} {condition:<6}: {SERVICE:<58} {spb:.4f} s/batch  [{describe(env)}]")
    tables = {}
    for condition in conditions:
        rows = {name: statistics.median(values) for name, values in results[condition].items()}
        tables[condition] = (rows, *print_table(args, condition, rows, cpus))
    print()
    worst = 0.0
    for condition, (rows, best_name, best) in tables.items():
        ratio = rows[SERVICE] / best
        worst = max(worst, ratio)
        picks = ", ".join(f"{env} ({count}x)" for env, count in chosen[condition].most_common())
        print(f"{condition}: service (probe) / best ({best_name}) = {ratio:.3f}; it chose {picks}")
    by_env = {describe(env): name for name, env in configs}
    for probed, other in ((a, b) for a in tables for b in tables if a != b):
        rows, best_name, best = tables[other]
        for env in chosen[probed]:
            ratio = rows[by_env[env]] / best if env in by_env else float("nan")
            worst = max(worst, ratio)
            print(f"probed {probed}, running {other}: {env} = {ratio:.3f} x best {other}")
    verdict = "WITHIN" if worst <= 1.10 else "NOT within"
    print(f"worst service ratio {worst:.3f} -> {verdict} 10 % ({time.time() - started:.0f} s)")
    return 0 if worst <= 1.10 else 1


if __name__ == "__main__":
    sys.exit(main())
