# Copyright: rnn_bootstrap maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Start (or resume) one char-rnn training run; installed by the role char_rnn_train.

    char_rnn_launcher.py /etc/char-rnn/RUN.json

The systemd unit char-rnn-train-RUN.service runs this as the training user. Each step is a tested
piece of the collection's module_utils, which the role copies next to this file:

* char_rnn_plan: resume from the newest *valid* checkpoint (checkpoints.py, as checkpoint_info)
  at the right iteration, learning rate and remaining epochs, or start fresh, or exit 0 when the
  run has reached max_epochs; a change of what makes the model (data set, model, rnn_size,
  num_layers, seq_length, batch_size, train/val fractions) starts a new run and moves the old
  checkpoints of this savefile to ``superseded-<time>/`` in the checkpoint directory;
* char_rnn_threads: the thread settings (auto, probe, or fixed), and the speed watch that asks for
  a new probe when other work comes or goes: train.lua is then stopped, probed again and resumed;
* char_rnn_supervisor: runs ``th train.lua`` line-buffered, copies every line to the journal and
  the run's log, keeps the best and the newest ``keep_checkpoints`` checkpoints, and stops before a
  checkpoint would take the file system below ``min_free_mb``: the reason goes to the journal, the
  log and the state file (status.yml shows it), and the exit status is EXIT_LOW_DISK, which the
  unit does not restart on (``RestartPreventExitStatus``): free space, then start the unit again.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import char_rnn_plan  # plugins/module_utils/char_rnn_plan.py, and so on: one implementation each
import char_rnn_threads
import checkpoints
import host
from char_rnn_supervisor import (
    DiskGuard,
    LowDisk,
    Tee,
    next_checkpoint_size,
    prune,
    remove_cut_short,
    run_trainer,
    supersede,
)

EXIT_LOW_DISK = 75  # EX_TEMPFAIL; the unit's RestartPreventExitStatus: not a crash to restart from


def load_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        return None


def stop_low_disk(config: dict[str, Any], state: dict[str, Any], reason: str, tee: Tee) -> int:
    """Record why the run stopped (status.yml shows it) and exit with EXIT_LOW_DISK."""
    state["stopped"] = {"reason": f"low disk space: {reason}", "at": time.time()}
    host.write_json(config["state_path"], state)
    tee.say(
        f"run {config['run']} stopped, low disk space: {reason}. Free space (or lower char_rnn_train_keep_checkpoints "
        f"or char_rnn_train_min_free_mb), then start {config.get('unit', 'the unit')} again: it resumes from the "
        "newest checkpoint"
    )
    return EXIT_LOW_DISK


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} RUN_CONFIG.json", file=sys.stderr)
        return 2
    while True:
        config = load_json(argv[1])
        if config is None:
            print(f"{argv[1]}: no such run configuration", file=sys.stderr)
            return 2
        tee = Tee(config["log_path"])
        try:
            code = start(config, tee)
        finally:
            tee.close()
        if not isinstance(code, str):
            return code
        # the speed watch stopped train.lua: start again, probe again, resume from the checkpoint


def start(config: dict[str, Any], tee: Tee) -> int | str:
    """One segment: plan, threads, train.lua. The exit status, or the speed watch's reason to start again."""
    options, chdir, state_path = config["options"], config["char_rnn_dir"], config["state_path"]
    savefile, keep = options["savefile"], int(config.get("keep_checkpoints") or 0)
    try:
        ntrain = char_rnn_plan.train_batches(chdir, options)
    except char_rnn_plan.PlanError as exc:
        tee.say(str(exc))
        return 1
    checkpoint_dir = os.path.join(chdir, options["checkpoint_dir"])
    os.makedirs(checkpoint_dir, exist_ok=True)
    state = load_json(state_path)
    now = time.time()
    decision = char_rnn_plan.plan(
        config, state, checkpoints.discover(checkpoint_dir, savefile)["checkpoints"], ntrain, now
    )
    for path in decision["invalid"]:
        tee.say(f"ignoring {path}: not a complete checkpoint")
    if decision.get("reason"):
        tee.say(decision["reason"])
    if decision["new_run"]:
        supersede(decision["supersede"], checkpoint_dir, tee)
        state = None
    if state is None:
        state = char_rnn_plan.new_state(config, decision)
    prune(checkpoint_dir, savefile, keep, tee)
    state.pop("stopped", None)

    if decision["action"] == "finished":
        char_rnn_plan.add_segment(state, decision, now, tee.offset())
        host.write_json(state_path, state)
        tee.say(char_rnn_plan.summary(config["run"], decision))
        return 0

    guard = DiskGuard(checkpoint_dir, int(config.get("min_free_mb") or 0))
    newest = checkpoints.latest_of(checkpoints.discover(checkpoint_dir, savefile)["checkpoints"])
    guard.checkpoint_size = next_checkpoint_size(newest["size"] if newest else 0, int(options["eval_val_every"]))
    low = guard.short()
    if low is not None:
        return stop_low_disk(config, state, low, tee)

    threads = state["threads"] = char_rnn_threads.select(
        config, state.get("threads"), ntrain, host.usable_cpus(), tee.say
    )
    env = char_rnn_threads.with_threads(char_rnn_threads.without_threads(dict(os.environ)), threads["env"])
    env.update({k: str(v) for k, v in (config.get("environment") or {}).items()})
    decision["threads"] = threads["env"]
    char_rnn_plan.add_segment(state, decision, now, tee.offset())
    host.write_json(state_path, state)
    tee.say(char_rnn_plan.summary(config["run"], decision))
    tee.say(f"threads ({threads['why']}): {char_rnn_threads.describe(threads['env'])}")

    def saved(path: str) -> None:
        prune(checkpoint_dir, savefile, keep, tee, training=True)
        with contextlib.suppress(OSError):  # removed since: keep the previous estimate
            guard.checkpoint_size = next_checkpoint_size(os.path.getsize(path), int(options["eval_val_every"]))

    argv = char_rnn_plan.command_line(config["th"], decision["options"], shutil.which("stdbuf"))
    started = time.time()
    code = run_trainer(argv, env, chdir, tee, char_rnn_threads.speed_watch(threads), guard, saved)
    if code != 0:  # stopped or crashed, perhaps while writing a checkpoint: that one is only in the way
        remove_cut_short(checkpoint_dir, savefile, started, tee)
    if isinstance(code, LowDisk):
        return stop_low_disk(config, state, code.reason, tee)
    if isinstance(code, str):  # other work came or went: probe again and resume, in this same process
        state["threads"]["reprobe"] = code
        host.write_json(state_path, state)
        return code
    if code is None:  # a clean stop: exit 0 so that systemd does not count it as a failure
        return 0
    if code == 0:
        state["finished"] = True
        host.write_json(state_path, state)
        tee.say(f"run {config['run']} finished")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
