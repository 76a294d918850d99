# Copyright: rnn_bootstrap maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The thread settings (OpenMP, OpenBLAS) a char-rnn training run gets, and the watch on its speed.

``char_rnn_train_threads``:

* ``auto``: the known-good setting, passive OpenMP waiting with a thread per CPU. It is the same
  for every OpenBLAS build (tests/benchmarks/threads.py, README), so ``auto`` does not look at the
  BLAS that ``th`` loads;
* ``probe``: times a few settings on this run's model at its first start and keeps the fastest;
  only here the BLAS matters (``blas_build``): beside a pthread OpenBLAS, Debian's OpenMP build is
  one more candidate. Then ``SpeedWatch`` follows the run's own time/batch: when it drifts far from
  the probe's figure (other work took the CPUs, or left), the launcher stops train.lua (at the next
  checkpoint unless the run got twice as slow), probes again and resumes;
* a dict fixes them (omp, openblas, wait_policy, or environment variable names).

Plain Python 3.8+ with no Ansible imports: the char_rnn_train role copies it beside the launcher.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from typing import Any, Callable

if __name__.startswith("ansible_collections."):  # in the collection (the unit tests)
    from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils import blas, char_rnn_log, char_rnn_plan
else:  # a plain file beside the launcher on the managed host (char_rnn_train tasks/install.yml)
    import blas
    import char_rnn_log
    import char_rnn_plan

# GOMP_SPINCOUNT of the bounded-spin candidate: libgomp spins this many times (a few ns each)
# before it sleeps, against 300000 (about 3 ms) by default and 0 with OMP_WAIT_POLICY=PASSIVE.
BOUNDED_SPIN = "300"
REPROBE_EVERY = 600.0  # seconds: the speed watch asks for a new probe at most this often
WATCH_WINDOW = 100  # batches whose median time/batch the speed watch compares with the probe's
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
CONFIGURED_NAMES = {"omp": "OMP_NUM_THREADS", "openblas": "OPENBLAS_NUM_THREADS", "wait_policy": "OMP_WAIT_POLICY"}


def blas_build(th: str, ldd: str = "ldd", env: dict[str, str] | None = None) -> tuple[str, str]:
    """(openmp|pthread|serial|unknown, resolved path): the OpenBLAS that libTH.so (next to th) loads."""
    real = os.path.realpath(th)
    lib = os.path.join(os.path.dirname(os.path.dirname(real)), "lib", "libTH.so")
    if not os.path.exists(lib):
        return "unknown", ""
    try:
        out = subprocess.run([ldd, lib], capture_output=True, text=True, timeout=30, check=False, env=env).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown", ""
    _name, resolved = blas.parse_ldd_blas(out)
    if not resolved or "openblas" not in os.path.basename(resolved).lower():
        return "unknown", ""
    return blas.openblas_variant(resolved), os.path.realpath(resolved)


def openmp_openblas_dir(build: str, resolved: str) -> str:
    """Debian's OpenMP OpenBLAS directory beside the pthread OpenBLAS that libTH loads, or ''.

    With it first in LD_LIBRARY_PATH, Torch's loops and the BLAS share one pool of OpenMP threads.
    """
    if build != "pthread" or not resolved:
        return ""
    directory = os.path.join(os.path.dirname(os.path.dirname(resolved)), "openblas-openmp")
    return directory if os.path.exists(os.path.join(directory, "libopenblas.so.0")) else ""


def without_threads(environ: dict[str, str]) -> dict[str, str]:
    """``environ`` less the thread variables the launcher sets itself."""
    return {k: v for k, v in environ.items() if k not in THREAD_VARS}


def with_threads(base: dict[str, str], threads: dict[str, str]) -> dict[str, str]:
    """``base`` with the thread settings; an LD_LIBRARY_PATH of theirs goes before the one of ``base``."""
    env = {**base, **threads}
    if threads.get("LD_LIBRARY_PATH") and base.get("LD_LIBRARY_PATH"):
        env["LD_LIBRARY_PATH"] = threads["LD_LIBRARY_PATH"] + os.pathsep + base["LD_LIBRARY_PATH"]
    return env


def known_good_threads(cpus: int) -> dict[str, str]:
    """Thread settings measured fast on every OpenBLAS build (tests/benchmarks/threads.py, README).

    Torch's OpenMP loops and a pthread OpenBLAS each start a thread per CPU, and OpenMP's default
    busy-waiting between loops starves the BLAS threads (4-8x slower on 2 CPUs). With the OpenMP
    OpenBLAS, busy-waiting is fast on an idle host but collapses as soon as other work wants the
    CPUs (0.095 -> 0.6 s/batch measured). Passive waiting is close to the best on both builds and
    stays there under load: the same answer whatever the build, so no BLAS detection is needed.
    """
    return {"OMP_NUM_THREADS": str(max(1, cpus)), "OMP_WAIT_POLICY": "PASSIVE"}


def thread_environment(threads: Any, cpus: int) -> tuple[dict[str, str], str]:
    """(environment, why) from the configured char_rnn_train_threads: auto (or probe's fallback) or a dict."""
    if threads in (None, "auto", "probe", {}):
        return known_good_threads(cpus), f"auto, known-good for every OpenBLAS build on {cpus} CPUs"
    env = {}
    for key, value in dict(threads).items():
        if value is not None and value != "":
            env[CONFIGURED_NAMES.get(key, key)] = str(value)
    return env, "configured"


def probe_candidates(th: str, cpus: int, build: tuple[str, str] | None = None) -> list[dict[str, str]]:
    """Thread settings worth timing: the known-good one and the others that do not busy-wait for long.

    OpenMP's default ACTIVE policy (and libgomp's default spin of about 3 ms before sleeping) is
    left out: a short probe on a quiet moment can find it fastest, and it is several times slower
    as soon as the host gets busy. A short bounded spin (GOMP_SPINCOUNT, in libgomp's spins of
    a few ns) with a single-threaded BLAS keeps most of the idle speed of spinning. When the th
    links Debian's pthread OpenBLAS and the OpenMP build is installed beside it, that build with
    passive waiting is a candidate too (through LD_LIBRARY_PATH). If the choice loses when other
    work comes, the speed watch of the run probes again (tests/benchmarks/threads.py, README).
    ``build`` is blas_build(th), found when not given.
    """
    kind, resolved = build if build is not None else blas_build(th)
    n = str(max(1, cpus))
    candidates = [
        known_good_threads(cpus),
        {"OMP_NUM_THREADS": "1"},
        {"OMP_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"},
        {"OMP_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": "1", "GOMP_SPINCOUNT": BOUNDED_SPIN},
    ]
    openmp_dir = openmp_openblas_dir(kind, resolved)
    if openmp_dir:  # one thread pool for Torch and the BLAS, passive: near the best idle and loaded
        candidates.append({"LD_LIBRARY_PATH": openmp_dir, "OMP_NUM_THREADS": n, "OMP_WAIT_POLICY": "PASSIVE"})
    unique: list[dict[str, str]] = []
    for env in candidates:
        if env not in unique:
            unique.append(env)
    return unique


def probe_args(options: dict[str, Any], ntrain: int, batches: int, directory: str) -> list[str]:
    """train.lua's options for a timing run: the same model, a fresh start, no checkpoint."""
    probe = dict(options)
    probe.update(
        max_epochs=(batches + 0.5) / ntrain,  # runs `batches` iterations, never reaches the final save
        eval_val_every=10**9,
        init_from="",
        checkpoint_dir=directory,
        savefile="probe",
        print_every=1,
    )
    return char_rnn_plan.train_args(probe)


def choose_fastest(timings: list[tuple[dict[str, str], float | None]]) -> tuple[dict[str, str], float] | None:
    measured = [(env, spb) for env, spb in timings if spb is not None]
    return min(measured, key=lambda item: item[1]) if measured else None


def describe(env: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(env.items()))


def probe_threads(
    config: dict[str, Any], ntrain: int, cpus: int, say: Callable[[str], None], batches: int = 12
) -> tuple[dict[str, str], str, float | None]:
    """Time each candidate for a few batches of this run's model; (environment, why, s/batch or None)."""
    options = config["options"]
    directory = os.path.join(os.path.dirname(config["state_path"]), f".probe-{config['run']}")
    os.makedirs(directory, exist_ok=True)
    timings = []
    base = without_threads(dict(os.environ))
    base.update({k: str(v) for k, v in (config.get("environment") or {}).items()})
    for env in probe_candidates(config["th"], cpus):
        argv = [config["th"], "train.lua", *probe_args(options, ntrain, batches, directory)]
        try:
            out = subprocess.run(
                argv, cwd=config["char_rnn_dir"], env=with_threads(base, env), capture_output=True, text=True,
                timeout=60 + 30 * batches, check=False,
            ).stdout  # fmt: skip
            spb = char_rnn_log.parse_text(out, median_of=max(1, batches - 3))["seconds_per_batch"]
        except subprocess.TimeoutExpired:
            spb = None
        timings.append((env, spb))
        shown = f"{spb:.4f} s/batch" if spb is not None else "no timing"
        say(f"probe {describe(env)}: {shown}")
    shutil.rmtree(directory, ignore_errors=True)
    best = choose_fastest(timings)
    if best is None:
        env, why = thread_environment("auto", cpus)
        return env, "probe gave no timing; " + why, None
    return best[0], f"probe of {len(timings)} settings x {batches} batches, fastest {best[1]:.4f} s/batch", best[1]


def select(
    config: dict[str, Any],
    previous: dict[str, Any] | None,
    ntrain: int,
    cpus: int,
    say: Callable[[str], None],
    clock: Callable[[], float] = time.time,
) -> dict[str, Any]:
    """This start's thread settings, as the state file records them (``threads``).

    ``probe`` keeps the setting probed earlier in the same run (same th) unless the speed watch asked
    for a new probe (``reprobe``); otherwise it probes now (probe_threads). ``auto`` and a dict
    need no probe.
    """
    setting = config.get("threads", "auto")
    previous = previous or {}
    reference = None
    if (
        setting == "probe"
        and previous.get("setting") == "probe"
        and previous.get("th") == config["th"]
        and not previous.get("reprobe")
    ):
        env, why, reference = previous["env"], "probed earlier in this run", previous.get("seconds_per_batch")
        probed_at = previous.get("probed_at", 0.0)
    elif setting == "probe":
        env, why, reference = probe_threads(config, ntrain, cpus, say)
        probed_at = clock()
    else:
        (env, why), probed_at = thread_environment(setting, cpus), 0.0
    return {
        "setting": setting if isinstance(setting, str) else "configured",
        "th": config["th"],
        "env": env,
        "why": why,
        "seconds_per_batch": reference,
        "probed_at": probed_at,
    }


class SpeedWatch:
    """Tells when train.lua's own time/batch has drifted far from the probe's figure for its setting.

    ``feed`` takes train.lua's output line by line and returns a reason to probe again, or None.
    The median of the last ``window`` batches is compared with ``reference``: ``urgent`` times
    slower (the setting collapses under other work) asks at once; ``change`` times slower or faster
    (other work came or went) asks once the next checkpoint is written (at the first progress line
    after "saving checkpoint", as train.lua prints that line before it writes), so that at most one
    iteration is lost. Nothing is asked before ``not_before`` (time.time()), so probes stay rare.
    """

    def __init__(self, reference: float, not_before: float = 0.0, window: int = 100, change: float = 1.5,
                 urgent: float = 2.0, clock: Any = time.time) -> None:  # fmt: skip
        self.reference, self.not_before, self.window = reference, not_before, window
        self.change, self.urgent, self.clock = change, urgent, clock
        self.times: list[float] = []
        self.pending: str | None = None
        self.saved = False

    def feed(self, line: str) -> str | None:
        if char_rnn_log.CHECKPOINT_RE.search(line):
            self.saved = True
            return None
        match = char_rnn_log.PROGRESS_RE.search(line)
        if not match or match.group("i") == match.group("total"):  # not progress, or the run's last batch
            return None
        if self.saved and self.pending:
            return self.pending
        self.saved = False
        try:
            self.times.append(float(match.group("time")))
        except ValueError:
            return None
        del self.times[: -self.window]
        if len(self.times) < self.window or self.clock() < self.not_before:
            return None
        ratio = sorted(self.times)[len(self.times) // 2] / self.reference
        why = f"time/batch {ratio:.2f}x the probe's {self.reference:.4f} s over the last {self.window} batches"
        if ratio >= self.urgent:
            return why
        self.pending = why if ratio >= self.change or ratio <= 1 / self.change else None
        return None


def speed_watch(threads: dict[str, Any]) -> SpeedWatch | None:
    """The watch for a run whose settings came from a probe (a figure to compare with), else None."""
    reference = threads.get("seconds_per_batch")
    if not reference:
        return None
    return SpeedWatch(reference, threads.get("probed_at", 0.0) + REPROBE_EVERY, WATCH_WINDOW)
