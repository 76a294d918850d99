# Copyright: rnn_bootstrap maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The char-rnn image's entry point (installed by the role char_rnn_image as /usr/local/bin/char-rnn).

    char-rnn train [-OPTION VALUE ...]      train (or resume) the run; train.lua's option names
    char-rnn sample [best|latest|PATH] [-length N -temperature T -primetext TEXT -seed N -sample 0|1]
    char-rnn checkpoints                    the run's checkpoints, newest last, and best/latest
    char-rnn help

Everything lives in the volume (/data by default): checkpoints in cv/<run>/, the corpus in
corpus/<dataset>/input.txt (char-rnn's own copy of the data set is put there when missing), and the
launcher's state, log and configuration in state/, log/ and run/. Options come from the command
line (``-rnn_size 256``, ``--rnn_size 256`` or ``--rnn_size=256``), else from the environment
(``CHARRNN_RNN_SIZE=256``), else from the defaults the image was built with. ``CHARRNN_RUN``
(``-run``) names the run, ``CHARRNN_DATASET`` (``-dataset``) the data set.

``train`` runs the collection's launcher (the one the char_rnn_train service runs): it resumes
from the newest *valid* checkpoint in the volume, with the remaining epochs and the decayed
learning rate, and exits 0 at once when the run has reached max_epochs.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from typing import Any

DEFAULTS = "/etc/char-rnn/image.json"
# Not options: where things go is derived from the run and the data set.
DERIVED = ("data_dir", "checkpoint_dir", "savefile", "gpuid")
# Launcher settings beside train.lua's options.
SETTINGS = ("run", "dataset", "threads", "keep_checkpoints", "min_free_mb")
SAMPLE_DEFAULTS = {"length": 2000, "temperature": 1.0, "primetext": "", "seed": 123, "sample": 1}


class UsageError(Exception):
    pass


def parse_args(args: list[str]) -> dict[str, str]:
    """``-name value``, ``--name value`` and ``--name=value``, in any mix."""
    out: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("-") or arg in ("-", "--"):
            raise UsageError(f"expected an option (-name value), got {arg!r}")
        name, eq, value = arg.lstrip("-").partition("=")
        if not eq:
            if i + 1 >= len(args):
                raise UsageError(f"option -{name} needs a value")
            value = args[i + 1]
            i += 1
        out[name.replace("-", "_")] = value
        i += 1
    return out


# train.lua's option types (a default of 50 epochs does not make 0.5 wrong).
INTEGERS = ("rnn_size", "num_layers", "seq_length", "batch_size", "seed", "print_every", "eval_val_every",
            "keep_checkpoints", "min_free_mb", "length", "sample")  # fmt: skip
NUMBERS = ("learning_rate", "learning_rate_decay", "learning_rate_decay_after", "decay_rate", "dropout", "max_epochs",
           "grad_clip", "train_frac", "val_frac", "temperature")  # fmt: skip


def coerce(name: str, value: Any) -> Any:
    """The value as train.lua's option of that name takes it: integers and numbers stay numbers."""
    kind = int if name in INTEGERS else float if name in NUMBERS else None
    if kind is None:
        return value
    try:
        return kind(value)
    except (TypeError, ValueError):
        what = "a whole number" if kind is int else "a number"
        raise UsageError(f"-{name} must be {what}, not {value!r}") from None


def native(value: Any) -> Any:
    """A number written as text (a template's output) as the number it is."""
    if isinstance(value, str):
        for kind in (int, float):
            try:
                return kind(value)
            except ValueError:
                continue
    return value


def environment_values(names: list[str], environ: dict[str, str]) -> dict[str, str]:
    return {n: environ[f"CHARRNN_{n.upper()}"] for n in names if f"CHARRNN_{n.upper()}" in environ}


def check_options(options: dict[str, Any]) -> None:
    """The checks train.yml's preflight makes, so that a bad value fails before train.lua starts."""
    problems = []
    if options["model"] not in ("lstm", "gru", "rnn"):
        problems.append(f"-model must be lstm, gru or rnn, not {options['model']!r}")
    for name in ("rnn_size", "num_layers", "seq_length", "batch_size", "eval_val_every", "print_every"):
        if options[name] < 1:
            problems.append(f"-{name} must be 1 or more, not {options[name]}")
    if not 0 <= options["dropout"] < 1:
        problems.append(f"-dropout must be in [0, 1), not {options['dropout']}")
    for name in ("learning_rate", "max_epochs", "train_frac"):
        if options[name] <= 0:
            problems.append(f"-{name} must be more than 0, not {options[name]}")
    if problems:
        raise UsageError("; ".join(problems))


def run_config(base: dict[str, Any], given: dict[str, str], volume: str) -> dict[str, Any]:
    """The launcher's configuration: the image's defaults, then the environment, then the arguments."""
    options = {name: coerce(name, native(value)) for name, value in base["options"].items()}
    settable = [n for n in options if n not in DERIVED]
    allowed = set(settable) | set(SETTINGS)
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise UsageError(
            f"unknown option(s) {', '.join('-' + n for n in unknown)}; allowed: {', '.join(sorted(allowed))}"
        )
    run = given.get("run", base["run"])
    dataset = given.get("dataset", base["dataset"])
    for name in ("run", "dataset"):
        value = run if name == "run" else dataset
        if not value or "/" in value or value.startswith("."):
            raise UsageError(f"-{name} must be a plain name (no '/', not starting with '.'), not {value!r}")
    for name in settable:
        if name in given:
            options[name] = coerce(name, given[name])
    check_options(options)
    threads: Any = given.get("threads", base["threads"])
    if isinstance(threads, str) and threads.startswith("{"):
        threads = json.loads(threads)
    elif threads not in ("probe", "auto") and not isinstance(threads, dict):
        raise UsageError(f"-threads must be probe, auto or a JSON object, not {threads!r}")
    options.update(
        data_dir=f"{volume}/corpus/{dataset}",
        checkpoint_dir=f"{volume}/cv/{run}",
        savefile=run,
        gpuid=-1,
    )
    return {
        **base,
        "run": run,
        "dataset": dataset,
        "log_path": f"{volume}/log/{run}.log",
        "state_path": f"{volume}/state/{run}.state.json",
        "checkpoint_path": f"{volume}/cv/{run}",
        "unit": "the container (run it again)",
        "threads": threads,
        "keep_checkpoints": coerce("keep_checkpoints", given.get("keep_checkpoints", base["keep_checkpoints"])),
        "min_free_mb": coerce("min_free_mb", given.get("min_free_mb", base["min_free_mb"])),
        "options": options,
    }


def seed_corpus(config: dict[str, Any]) -> None:
    """Put char-rnn's own copy of the data set in the volume when the volume has none."""
    target = os.path.join(config["options"]["data_dir"], "input.txt")
    source = os.path.join(config["char_rnn_dir"], "data", config["dataset"], "input.txt")
    if os.path.exists(target):
        return
    if not os.path.exists(source):
        raise UsageError(f"no corpus: put the text in {target} (the volume), or use -dataset tinyshakespeare")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.copyfile(source, target)
    print(f"char-rnn image: copied {source} to {target}", flush=True)


def load_defaults(path: str = DEFAULTS) -> dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def train(args: list[str], environ: dict[str, str], base: dict[str, Any]) -> int:
    names = [n for n in base["options"] if n not in DERIVED] + list(SETTINGS)
    given = {**environment_values(names, environ), **parse_args(args)}
    volume = base["volume"]
    config = run_config(base, given, volume)
    seed_corpus(config)
    for folder in ("log", "state", "run"):
        os.makedirs(os.path.join(volume, folder), exist_ok=True)
    path = os.path.join(volume, "run", f"{config['run']}.json")
    with open(path + ".tmp", "w", encoding="utf-8") as handle:
        json.dump(config, handle, indent=2)
    os.replace(path + ".tmp", path)
    launcher = os.path.join(base["libexec_dir"], "char_rnn_launcher.py")
    # exec: the launcher is PID 1's replacement, so `podman stop` reaches it (it forwards to train.lua)
    os.execv(base["python"], [base["python"], launcher, path])
    return 0  # not reached


def pick_checkpoint(which: str, config: dict[str, Any], libexec_dir: str) -> str:
    sys.path.insert(0, libexec_dir)
    import checkpoints

    if which.startswith("/"):
        if not os.path.isfile(which):
            raise UsageError(f"{which}: no such checkpoint file")
        return which
    if which not in ("best", "latest"):
        raise UsageError(f"sample takes best, latest or an absolute path to a checkpoint, not {which!r}")
    directory = config["checkpoint_path"]
    if not os.path.isdir(directory):
        raise UsageError(f"no checkpoints of run {config['run']!r}: {directory} does not exist (train first)")
    found = checkpoints.discover(directory, config["options"]["savefile"])
    chosen = found[which]
    if chosen is None:
        raise UsageError(f"no valid checkpoint of run {config['run']!r} in {directory} ({found['count']} file(s))")
    return chosen["path"]


def sample(args: list[str], environ: dict[str, str], base: dict[str, Any]) -> int:
    which = environ.get("CHARRNN_CHECKPOINT", "best")
    if args and not args[0].startswith("-"):
        which, args = args[0], args[1:]
    given = parse_args(args)
    run = given.pop("run", environ.get("CHARRNN_RUN", base["run"]))
    config = run_config(base, {"run": run}, base["volume"])
    unknown = sorted(set(given) - set(SAMPLE_DEFAULTS))
    if unknown:
        raise UsageError(f"unknown sample option(s) {', '.join('-' + n for n in unknown)}; allowed: -run, "
                         + ", ".join("-" + n for n in SAMPLE_DEFAULTS))  # fmt: skip
    values = {n: given.get(n, environ.get(f"CHARRNN_SAMPLE_{n.upper()}", str(d))) for n, d in SAMPLE_DEFAULTS.items()}
    for name in SAMPLE_DEFAULTS:
        coerce(name, values[name])
    checkpoint = pick_checkpoint(which, config, base["libexec_dir"])
    print(f"char-rnn image: sampling from {checkpoint}", file=sys.stderr, flush=True)
    argv = [base["th"], "sample.lua", checkpoint, "-gpuid", "-1", "-verbose", "0"]
    for name, value in values.items():
        argv += [f"-{name}", value]
    os.chdir(base["char_rnn_dir"])
    os.execv(base["th"], argv)
    return 0  # not reached


def list_checkpoints(args: list[str], environ: dict[str, str], base: dict[str, Any]) -> int:
    given = parse_args(args)
    config = run_config(base, {"run": given.get("run", environ.get("CHARRNN_RUN", base["run"]))}, base["volume"])
    sys.path.insert(0, base["libexec_dir"])
    import checkpoints

    directory = config["checkpoint_path"]
    found = checkpoints.discover(directory, config["options"]["savefile"]) if os.path.isdir(directory) else None
    if not found:
        print(f"no checkpoints of run {config['run']!r} in {directory}")
        return 0
    for entry in sorted(found["checkpoints"], key=lambda e: e["mtime"]):
        print(f"{entry['name']}\t{'valid' if entry['valid'] else 'INVALID'}\t{entry['size']} bytes")
    for which in ("latest", "best"):
        print(f"{which}: {found[which]['name'] if found[which] else 'none'}")
    return 0


def main(argv: list[str], environ: dict[str, str] | None = None) -> int:
    environ = dict(os.environ if environ is None else environ)
    command, args = (argv[1], argv[2:]) if len(argv) > 1 else ("help", [])
    commands = {"train": train, "sample": sample, "checkpoints": list_checkpoints}
    if command not in commands:
        print(__doc__)
        return 0 if command in ("help", "-h", "--help") else 2
    try:
        return commands[command](args, environ, load_defaults())
    except UsageError as exc:
        print(f"char-rnn {command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
