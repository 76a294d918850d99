# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""torch_install's state files: the build record in the prefix and the progress file beside the log.

The record says what the prefix holds (commit, Lua flavour, packages, CUDA, BLAS, the Lua
environment, where it came from); a rebuild is needed when what is wanted differs from it.
Plain Python 3.8+ (it runs on the managed host).
"""

from __future__ import annotations

import datetime
import json
import os
import time

from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils.host import write_json

STATE_FILE = ".rnn_bootstrap-build.json"
STATE_SCHEMA = 1
MANAGED_BY = "rnn_bootstrap.char_rnn.torch_install"
# The fields of a record that decide whether a prefix is what is wanted.
DECIDING_FIELDS = ("commit", "lua_flavour", "prefix", "packages", "cuda")


def state_path(prefix):
    return os.path.join(prefix, STATE_FILE)


def th_path(prefix):
    return os.path.join(prefix, "bin", "th")


def read_state(path):
    """The recorded build, ``None`` when absent, ``{}`` when unreadable."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_state(prefix, record):
    return write_json(state_path(prefix), record)


def desired_record(commit, flavour, prefix, packages, cuda):
    """The part of the state that decides whether a rebuild is needed."""
    return {
        "commit": commit,
        "lua_flavour": flavour,
        "prefix": prefix,
        "packages": list(packages),
        "cuda": bool(cuda),
    }


def compare_state(desired, state):
    """Reasons why ``state`` (a recorded build) does not match ``desired``; empty = match."""
    if state is None:
        return ["no build record"]
    if not state:
        return ["build record unreadable"]
    if state.get("incomplete"):
        return ["previous build did not finish"]
    reasons = []
    for key in DECIDING_FIELDS:
        if state.get(key) != desired[key]:
            reasons.append(f"{key} changed: {state.get(key)} -> {desired[key]}")
    return reasons


def progress_path(log_path):
    return log_path + ".progress.json"


def write_progress(log_path, number, total, name, finished=False):
    """Where the build is, for a play that follows a build running in the background."""
    write_json(
        progress_path(log_path),
        {"step": number, "steps": total, "name": name, "finished": finished, "since": round(time.time())},
    )


def now_utc():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
