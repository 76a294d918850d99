"""Thread settings for char-rnn on this host: prints s/batch per configuration, side by side.

NOT a timed test: it prints figures. Needs a REAL Torch7 and char-rnn (README: "Benchmarks"):

    python3 tests/benchmarks/threads.py --th /opt/real-torch/bin/th --char-rnn /opt/real-char-rnn

Every configuration runs the same th binary on char-rnn's default model (lstm, rnn_size 128,
2 layers, seq_length 50, batch_size 50, tinyshakespeare) for --batches iterations; rounds
alternate the configurations so that load from other work on the host spreads over all of
them. The OpenMP build of Debian's OpenBLAS is loaded through LD_LIBRARY_PATH, so both builds
run in one session without touching update-alternatives. The last row, "service (probe)", is
the role's launcher (roles/char_rnn_train/files/char_rnn_launcher.py, the unit's ExecStart)
choosing its settings itself; it must be within 10 % of the best row. The launcher's known-good
settings are rows too: "pthread, OMP_WAIT_POLICY=PASSIVE" (a pthread OpenBLAS alone) and
"OpenMP OpenBLAS, defaults".
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LAUNCHER = REPO / "roles" / "char_rnn_train" / "files" / "char_rnn_launcher.py"
MODULE_UTILS = REPO / "plugins" / "module_utils"
OPENMP_DIR = "/usr/lib/x86_64-linux-gnu/openblas-openmp"
PROGRESS_RE = re.compile(
    r"(\d+)/(\d+) \(epoch [^)]*\), train_loss = \S+, grad/param norm = \S+, time/batch = ([\d.]+)s"
)
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_WAIT_POLICY", "GOTO_NUM_THREADS", "LD_LIBRARY_PATH")


def configurations(cpus: int) -> list[tuple[str, dict[str, str]]]:
    n = str(cpus)
    openmp = {"LD_LIBRARY_PATH": OPENMP_DIR}
    return [
        ("pthread OpenBLAS, defaults", {}),
        ("pthread, OMP_WAIT_POLICY=PASSIVE", {"OMP_WAIT_POLICY": "PASSIVE"}),
        ("pthread, OPENBLAS_NUM_THREADS=1", {"OPENBLAS_NUM_THREADS": "1"}),
        ("pthread, OMP_NUM_THREADS=1", {"OMP_NUM_THREADS": "1"}),
        (
            f"pthread, OMP={n} OPENBLAS=1 PASSIVE",
            {"OMP_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"},
        ),
        ("OpenMP OpenBLAS, defaults", dict(openmp)),
        (f"OpenMP OpenBLAS, OMP={n} PASSIVE", {**openmp, "OMP_NUM_THREADS": n, "OMP_WAIT_POLICY": "PASSIVE"}),
    ]


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


def run_direct(args, env_extra: dict[str, str], workdir: Path) -> float:
    epochs = (args.batches + 0.5) / args.ntrain  # loop runs args.batches times, never hits the final eval
    cmd = [
        args.th, "train.lua", "-gpuid", "-1", "-max_epochs", repr(epochs), "-eval_val_every", "1000000",
        "-checkpoint_dir", str(workdir / "cv"), "-savefile", "bench",
    ]  # fmt: skip
    proc = subprocess.run(
        cmd, cwd=args.char_rnn, env={**base_env(), **env_extra}, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-1500:]}\n{proc.stderr[-1500:]}")
    return seconds_per_batch(proc.stdout, args.skip)[0]


def run_service(args, workdir: Path, round_no: int) -> tuple[float, str]:
    run = f"bench{round_no}"
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
    proc = subprocess.run(
        [sys.executable, str(LAUNCHER), str(path)],
        # the role installs checkpoints.py and corpus.py next to the launcher; here they are in module_utils
        env={**base_env(), "PYTHONPATH": str(MODULE_UTILS)},
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"launcher failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-1500:]}")
    chosen = re.search(r"threads \((.*?)\): (.*)", proc.stdout)
    # only train.lua's lines after the launcher's "threads" line: the training with the choice
    proc.stdout = proc.stdout[chosen.end() :] if chosen else proc.stdout
    return seconds_per_batch(proc.stdout, args.skip)[0], (chosen.group(2) if chosen else "?")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--th", default="/opt/real-torch/bin/th")
    parser.add_argument("--char-rnn", type=Path, default=Path("/opt/real-char-rnn"))
    parser.add_argument("--batches", type=int, default=20, help="iterations per configuration and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--skip", type=int, default=3, help="first iterations left out (warm-up)")
    args = parser.parse_args()
    args.ntrain = ntrain_of(args.char_rnn / "data" / "tinyshakespeare" / "input.txt", 50, 50)
    cpus = len(os.sched_getaffinity(0))
    configs = configurations(cpus)
    results: dict[str, list[float]] = {name: [] for name, _env in configs}
    results["service (probe)"] = []
    chosen = "?"
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="char-rnn-bench-") as tmp:
        workdir = Path(tmp)
        # One short run first: char-rnn preprocesses the corpus (data.t7, vocab.t7) on first use.
        run_direct(argparse.Namespace(**{**vars(args), "batches": 2, "skip": 0}), {}, workdir)
        for round_no in range(1, args.rounds + 1):
            for name, env in configs:
                results[name].append(run_direct(args, env, workdir))
                print(f"  round {round_no}: {name:<40} {results[name][-1]:.4f} s/batch", flush=True)
            spb, chosen = run_service(args, workdir, round_no)
            results["service (probe)"].append(spb)
            print(f"  round {round_no}: {'service (probe)':<40} {spb:.4f} s/batch  [{chosen}]", flush=True)
    rows = {name: statistics.median(values) for name, values in results.items()}
    best_name = min((n for n in rows if n != "service (probe)"), key=rows.get)
    best = rows[best_name]
    print()
    print(f"char-rnn default model, {args.batches} batches x {args.rounds} rounds per row, {cpus} CPUs, th {args.th}")
    print(f"{'configuration':<42} {'s/batch':>8} {'x best':>7}")
    for name, value in rows.items():
        print(f"{name:<42} {value:8.4f} {value / best:7.2f}")
    ratio = rows["service (probe)"] / best
    print(f"\nservice chose: {chosen}")
    verdict = "WITHIN" if ratio <= 1.10 else "NOT within"
    print(f"service (probe) vs best tried ({best_name}): {ratio:.3f} -> {verdict} 10 %")
    print(f"({time.time() - started:.0f} s)")
    return 0 if ratio <= 1.10 else 1


if __name__ == "__main__":
    sys.exit(main())
