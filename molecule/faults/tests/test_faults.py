"""Fault injection (testinfra, Molecule's verifier), FIXTURE upstream, one Debian 12 host.

Each test is one row: inject the fault, check the message the user sees, remove the fault, run
again and check the host ends healthy with nothing lost. The rows run in file order on the host
that converge provisioned (site.yml and train.yml); conftest.py prints the table at the end.
Torch7 rows build a second prefix under /opt/faults so the provisioned one stays as it was.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest
from verify_helpers import (
    PROJECT,
    extra_vars,
    playbook_command,
    playbook_env,
    playbook_on,
    recap,
    unit_property,
)
from verify_helpers import wait_for as wait_every_second

SCENARIO = Path(__file__).resolve().parents[1]
RUN = "molecule"
UNIT = f"char-rnn-train-{RUN}.service"
CV = f"/opt/rnn-karpathy/cv/{RUN}"
LOG = f"/var/log/char-rnn/{RUN}.log"
EVAL_VAL_EVERY = 20
PROGRESS_RE = re.compile(r"^(\d+)/(\d+) \(epoch", re.M)
LOADED_RE = re.compile(r"loading a model from checkpoint (\S+\.t7)")

SRC = "/opt/faults/torch"
PREFIX = "/opt/faults/torch/install"
BUILD_LOG = "/var/log/faults-torch-build.log"
SMALL = "/srv/faults-small"
# converge installed the packages: the rows' runs skip that (slow) step
NO_PACKAGES = {
    "system_deps_packages": [],
    "system_deps_runtime_packages": [],
    "system_deps_blas_packages": [],
    "system_deps_extra_packages": [],
}
# The rows' Torch7: its own sources, prefix and log; the provisioned th and profile are left alone.
TORCH = {
    "torch7_src": SRC,
    "torch7_prefix": PREFIX,
    "torch7_build_log": BUILD_LOG,
    "torch7_profile_script": "",
    "torch7_th_link": "",
    **NO_PACKAGES,
}


# the rows watch for short windows (a checkpoint being written, a build step)
wait_for = functools.partial(wait_every_second, interval=0.5)


def book(name: str) -> str | Path:
    """This scenario's playbook of that name, else the collection's."""
    return SCENARIO / name if (SCENARIO / name).exists() else name


def command(host, name: str, extra: dict | None = None) -> list[str]:
    return playbook_command(book(name), *(extra_vars(extra) if extra else []), limit=host.backend.get_hostname())


def playbook(host, name: str, extra: dict | None = None) -> subprocess.CompletedProcess:
    return playbook_on(host, book(name), *(extra_vars(extra) if extra else []))


def failure(run: subprocess.CompletedProcess) -> str:
    """The message of the play's last failed task, as the user reads it."""
    messages = []
    for line in run.stdout.splitlines():
        if line.startswith("fatal: ") and "=> {" in line:
            result = json.loads(line.split("=> ", 1)[1])
            messages.append(result.get("msg", "") or json.dumps(result)[:2000])
    assert messages, run.stdout[-3000:]
    return " ".join(messages[-1].split())


def record(host, prefix: str = PREFIX) -> dict | None:
    state = host.file(f"{prefix}/.rnn_bootstrap-build.json")
    return json.loads(state.content_string) if state.exists else None


def healthy(host, prefix: str = PREFIX) -> None:
    """The build record says installed, and th runs with the modules char-rnn needs."""
    state = record(host, prefix)
    assert state and not state.get("incomplete") and state.get("built_at"), state
    lua = "require 'torch'; require 'nn'; print('ok')"
    probe = host.run(f'. {prefix}/bin/torch-activate && {prefix}/bin/th -e "{lua}"')
    assert probe.rc == 0 and "ok" in probe.stdout, probe.stdout + probe.stderr


show = functools.partial(unit_property, unit=UNIT)


def newest_valid_checkpoint(host) -> str | None:
    """The launcher's own choice, computed on the host with checkpoints.py (as it does)."""
    script = (
        "import sys, json; sys.path.insert(0, '/usr/local/libexec/char-rnn'); import checkpoints; "
        f"r = checkpoints.discover('{CV}', '{RUN}'); "
        "print(json.dumps([r['latest']['path'] if r['latest'] else None, r['invalid']]))"
    )
    return json.loads(host.check_output(f'python3 -c "{script}"'))[0]


def invalid_checkpoints(host) -> list[str]:
    script = (
        "import sys, json; sys.path.insert(0, '/usr/local/libexec/char-rnn'); import checkpoints; "
        f"print(json.dumps(checkpoints.discover('{CV}', '{RUN}')['invalid']))"
    )
    return json.loads(host.check_output(f'python3 -c "{script}"'))


def last_iteration(text: str) -> int:
    """The iteration of the last progress line (counted within the current -init_from segment)."""
    return int(PROGRESS_RE.findall(text)[-1][0])


def between(text: str, start: str, end: str) -> str:
    """TEXT from START up to END (included), or to its end."""
    text = text[text.find(start) :] if start in text else text
    return text[: text.find(end) + len(end)] if end in text else text


def checkpoint_iteration(name: str, per_epoch: int) -> int:
    epoch = float(re.search(r"_epoch([\d.]+)_", name).group(1))
    return round(epoch * per_epoch)


class Upstream:
    """The FIXTURE git daemon that testbed.py started: stopped, then started again on its port."""

    def __init__(self) -> None:
        self.pid = int(os.environ["CHARRNN_FIXTURE_DAEMON_PID"])
        self.args = shlex.split(os.environ["CHARRNN_FIXTURE_DAEMON_ARGS"])
        self.own: subprocess.Popen | None = None

    def stop(self) -> None:
        if self.own is None:
            os.kill(self.pid, signal.SIGTERM)  # testbed.py's daemon (it reaps it at the end)
        else:
            self.own.terminate()
            self.own.wait()
        port = next(a.split("=", 1)[1] for a in self.args if a.startswith("--port="))
        probe = ["git", "ls-remote", f"git://127.0.0.1:{port}/github.com/torch/distro.git"]
        wait_for(lambda: subprocess.run(probe, capture_output=True, check=False).returncode != 0, 10, "the stop")

    def start(self) -> None:
        self.own = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        assert self.own.poll() is None, "the git daemon did not start again"


@pytest.fixture(scope="module")
def upstream():
    daemon = Upstream()
    yield daemon
    if daemon.own is not None:
        daemon.own.terminate()
        daemon.own.wait()


def test_upstream_unreachable_during_the_clone(host, table, upstream):
    row = table.row("Git upstream unreachable during the clone (loopback git daemon stopped)")
    url = os.environ["CHARRNN_UPSTREAM_URL"] + "torch/distro.git"
    upstream.stop()
    run = playbook(host, "torch.yml", TORCH)
    assert run.returncode != 0
    message = failure(run)
    row.saw = between(message, "Cloning", "run the play again.")
    # the URL git fetched (after the rewrite), and the one the user configured
    configured = "torch7_repo https://github.com/torch/distro.git after the Git URL rewrites"
    assert f"Cloning torch/distro from {url} ({configured}" in message
    assert f"Nothing was left in {SRC}." in message
    assert not host.file(SRC).exists  # no half clone for the next run to trip over
    upstream.start()
    again = playbook(host, "torch.yml", TORCH)
    assert again.returncode == 0, again.stdout[-3000:]
    healthy(host)
    assert host.file(f"{SRC}/.git").is_directory
    row.recovered, row.lost = "yes", "none"


KILLER = r"""
import json, os, signal, sys, time
progress = sys.argv[1]
deadline = time.time() + 600
while time.time() < deadline:
    try:
        step = json.load(open(progress))
    except (OSError, ValueError):
        step = {}
    if step.get("steps") and step["step"] >= step["steps"] // 2 and not step.get("finished"):
        break
    time.sleep(0.05)
else:
    sys.exit("the build never got halfway")
def cmdline(pid):
    try:
        return open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode()
    except OSError:
        return ""
def children():
    kids = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            ppid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(pid))
    return kids
kids = children()
roots = [int(p) for p in filter(str.isdigit, os.listdir("/proc")) if "torch_install" in cmdline(p)]
tree, todo = set(), list(roots)
while todo:
    pid = todo.pop()
    if pid not in tree:
        tree.add(pid)
        todo.extend(kids.get(pid, []))
for pid in tree:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
print(json.dumps({"step": step, "killed": sorted(tree)}))
"""


def test_sigkill_halfway_through_the_build(host, table):
    row = table.row("ansible-playbook and the Torch7 build killed with SIGKILL halfway through the build")
    play = subprocess.Popen(
        command(host, "torch.yml", {**TORCH, "torch7_force_rebuild": True}),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=PROJECT, env=playbook_env(),
    )  # fmt: skip
    try:
        host.run(f"cat > /tmp/faults-killer.py <<'EOF'\n{KILLER}\nEOF")
        killed = host.run(f"python3 /tmp/faults-killer.py {BUILD_LOG}.progress.json")
    finally:
        play.send_signal(signal.SIGKILL)
        play.communicate()
    assert killed.rc == 0, killed.stdout + killed.stderr
    done = json.loads(killed.stdout)
    assert done["killed"], done
    state = record(host)
    # the record of a build cut short never claims an install
    assert state is not None and state.get("incomplete") is True and "built_at" not in state, state
    row.saw = (
        f"play and {len(done['killed'])} build processes killed at step {done['step']['step']}/{done['step']['steps']} "
        f"({done['step']['name']}); build record: incomplete"
    )
    again = playbook(host, "torch.yml", TORCH)
    assert again.returncode == 0, again.stdout[-3000:]
    assert "previous build did not finish" in again.stdout, again.stdout[-3000:]
    row.saw += "; re-run: 'previous build did not finish', rebuilt"
    healthy(host)
    row.recovered, row.lost = "yes", "none"


def test_disk_full_during_the_build(host, table):
    row = table.row("disk full during the build (prefix on an 8 MB tmpfs, then a space hog on it)")
    small = {**TORCH, "torch7_prefix": f"{SMALL}/torch"}
    # 1. the preflight: the default torch7_min_free_mb does not fit in 8 MB; nothing is built
    run = playbook(host, "torch.yml", small)
    assert run.returncode != 0
    preflight = failure(run)
    assert f"not enough disk space to build Torch7 on {SMALL}" in preflight, preflight
    assert "a build needs about 200 MB there (torch7_min_free_mb" in preflight, preflight
    assert not host.file(f"{SMALL}/torch").exists
    # 2. the preflight off and the filesystem nearly full: the build itself runs out of space
    free_kb = int(host.check_output(f"df -Pk {SMALL} | awk 'NR==2 {{print $4}}'"))
    host.check_output(f"fallocate -l {(free_kb - 64) * 1024} {SMALL}/hog")
    run = playbook(host, "torch.yml", {**small, "torch7_min_free_mb": 0})
    assert run.returncode != 0
    full = failure(run)
    assert f"no space left on device: {SMALL} (for {SMALL}/torch) has 0 MB free now" in full, full
    state = record(host, f"{SMALL}/torch")
    assert state is None or state.get("incomplete") is True, state
    row.saw = (
        f"preflight: {between(preflight, 'not enough', ' (step:').removesuffix(' (step:')} | during the build: "
        + between(full, "Torch build failed", " (full log").removesuffix(" (full log")
    )
    # 3. space again (the hog removed): the re-run builds there and the host is healthy
    host.check_output(f"rm -f {SMALL}/hog")
    again = playbook(host, "torch.yml", {**small, "torch7_min_free_mb": 4})
    assert again.returncode == 0, again.stdout[-3000:]
    healthy(host, f"{SMALL}/torch")
    healthy(host)  # the other prefix, untouched
    row.recovered, row.lost = "yes", "none"


HOLDER = """import fcntl, sys, time
lock = open("/var/lib/dpkg/lock-frontend", "w")
fcntl.lockf(lock, fcntl.LOCK_EX)
time.sleep(float(sys.argv[1]))
"""


def start_holder(host, unit: str, seconds: int) -> str:
    """Start the holder and wait for its lock on the host, in one command (each command is slow)."""
    script = (
        f"cat > /usr/local/sbin/faults-lock-holder <<'EOF'\n{HOLDER}EOF\n"
        f"systemd-run --unit={unit} --collect /usr/bin/python3 /usr/local/sbin/faults-lock-holder {seconds}\n"
        "for i in $(seq 300); do\n"
        f"  pid=$(systemctl show -p MainPID --value {unit})\n"
        '  [ "$pid" != 0 ] && grep -q " $pid " /proc/locks && { echo "$pid"; exit 0; }\n'
        "  sleep 0.1\n"
        "done\n"
        f"cat /proc/locks; systemctl status {unit}; exit 1\n"
    )
    started = host.run(script)
    assert started.rc == 0, started.stdout + started.stderr
    return started.stdout.strip().splitlines()[-1]


def test_dpkg_lock_held_by_another_process(host, table):
    row = table.row("dpkg lock held by another process (as unattended-upgrades does at first boot)")
    pid = start_holder(host, "faults-apt-lock-1", 3600)
    started = time.monotonic()
    run = playbook(host, "system_deps.yml", {**NO_PACKAGES, "system_deps_apt_lock_timeout": 10})
    waited = time.monotonic() - started
    host.run("systemctl stop faults-apt-lock-1")
    assert run.returncode != 0
    message = failure(run)
    assert "after waiting 10 s (system_deps_apt_lock_timeout)" in message, message
    holder = f"{pid} python3 (/usr/bin/python3 /usr/local/sbin/faults-lock-holder 3600)"
    assert f"{holder} holds /var/lib/dpkg/lock-frontend" in message
    assert waited >= 10, waited
    row.saw = f"play failed after {waited:.0f} s: " + between(message, "apt/dpkg", "run the play again.")
    # the holder gone, the same play goes through and changes nothing
    assert host.run("systemctl is-active faults-apt-lock-1").stdout.strip() != "active"
    again = playbook(host, "system_deps.yml", {**NO_PACKAGES, "system_deps_apt_lock_timeout": 10})
    assert again.returncode == 0, again.stdout[-3000:]
    assert recap(again.stdout) == 0
    row.recovered, row.lost = "yes", "none"


def per_epoch(host) -> int:
    state = json.loads(host.file(f"/var/lib/char-rnn/{RUN}.state.json").content_string)
    return state["total_iterations"] // 40


def test_host_rebooted_mid_run(host, table):
    row = table.row("training host rebooted mid-run (podman restart of the container)")
    wait_for(lambda: show(host, "ActiveState") == "active", 60, "the unit to be active")
    wait_for(lambda: newest_valid_checkpoint(host), 120, "a valid checkpoint")
    name = host.backend.get_hostname()
    before = host.file(LOG).content_string
    at_reboot = last_iteration(before)
    subprocess.run(["podman", "restart", "--time", "5", name], check=True, capture_output=True)
    expected = newest_valid_checkpoint(host)  # before train.lua can write another (>= 4 s)
    loaded = wait_for(
        lambda: LOADED_RE.findall(host.file(LOG).content_string[len(before) :]),
        120,
        "the service to resume after the reboot",
        detail=lambda: host.run(f"systemctl status {UNIT}; tail -n 30 {LOG}").stdout,
    )[0]
    assert show(host, "ActiveState") == "active"
    assert loaded == expected, (loaded, expected)
    # (the epoch in a checkpoint's name has 2 decimals: its iteration is known to +-1)
    lost = max(0, at_reboot - checkpoint_iteration(loaded, per_epoch(host)))
    row.saw = f"service back by itself after the restart: 'loading a model from checkpoint {loaded}'"
    row.recovered = "yes"
    row.lost = f"{lost} iterations since that checkpoint (eval_val_every {EVAL_VAL_EVERY}, + the save in flight)"
    assert lost <= 2 * EVAL_VAL_EVERY


STOPPER = r"""
import subprocess, sys, time
log, unit = sys.argv[1], sys.argv[2]
with open(log) as handle:
    handle.seek(0, 2)
    deadline, text = time.time() + 120, ""
    while time.time() < deadline:
        text += handle.read()
        if "saving checkpoint to " in text:
            subprocess.run(["systemctl", "stop", unit], check=True)
            print(text.split("saving checkpoint to ", 1)[1].split()[0])
            sys.exit(0)
        time.sleep(0.02)
sys.exit("no checkpoint was written in 120 s")
"""


def test_stop_while_a_checkpoint_is_written(host, table):
    row = table.row("systemctl stop while a checkpoint is being written")
    wait_for(lambda: show(host, "ActiveState") == "active", 60, "the unit to be active")
    # on the host, at once: the next "saving checkpoint" line, then stop (FIXTURE_SECONDS_PER_SAVE
    # holds the half-written file for 3 s)
    host.run(f"cat > /tmp/faults-stopper.py <<'EOF'\n{STOPPER}\nEOF")
    stopped = host.run(f"python3 /tmp/faults-stopper.py {LOG} {UNIT}")
    assert stopped.rc == 0, stopped.stdout + stopped.stderr
    writing = stopped.stdout.strip().splitlines()[-1]
    writing = writing if writing.startswith("/") else f"/opt/rnn-karpathy/{writing}"  # train.lua's cwd
    after_stop = host.file(LOG).content_string
    stopped_at = last_iteration(after_stop)
    # The launcher removes a checkpoint its stopped train.lua was writing; one left behind (a kill
    # the launcher did not survive) must at least never count as valid.
    removed = f"removed {Path(writing).name}: train.lua stopped while writing it" in after_stop
    half = host.file(writing)
    left = half.exists
    assert removed or left, (writing, after_stop[-2000:])
    assert not (removed and left), writing
    newest = newest_valid_checkpoint(host)
    # the cut-short file is never the newest valid checkpoint
    assert newest != writing
    if left:
        assert writing in invalid_checkpoints(host)
        what = f"left at {half.size} bytes and marked invalid"
    else:
        what = "cut short and removed by the launcher"
    row.saw = f"{Path(writing).name} {what}; newest valid: {Path(newest).name}"
    before = host.file(LOG).content_string
    host.check_output(f"systemctl start {UNIT}")
    loaded = wait_for(lambda: LOADED_RE.findall(host.file(LOG).content_string[len(before) :]), 60, "the resume")[0]
    assert loaded == newest
    if left:
        assert f"ignoring {writing}: not a complete checkpoint" in host.file(LOG).content_string[len(before) :]
    row.recovered = "yes"
    lost = max(0, stopped_at - checkpoint_iteration(loaded, per_epoch(host)))
    row.lost = f"{lost} iterations since the last valid checkpoint"


@pytest.fixture
def corpora(tmp_path):
    binary = tmp_path / "binary.txt"
    binary.write_bytes(bytes(range(256)) * 64)
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    huge = tmp_path / "huge.txt"
    with open(huge, "wb") as handle:  # sparse: 13 GB by its size, nothing written
        handle.truncate(13_000_000_000)
    good = tmp_path / "good.txt"
    good.write_text("It is a truth universally acknowledged.\n" * 200)
    return {"binary": binary, "empty": empty, "huge": huge, "good": good}


def test_bad_corpora_change_nothing_on_the_host(host, table, corpora):
    row = table.row("bad corpus: binary, empty, 13 GB (too big for LuaJIT's heap, default flavour)")
    data = "/opt/rnn-karpathy/data/faults"
    expected = {
        "binary": "is not text: ",
        "empty": "is empty",
        "huge": "Build Torch with torch7_lua_flavour: LUA51",
    }
    seen = []
    for name, message in expected.items():
        run = playbook(host, "char_rnn.yml", {"char_rnn_dataset": "faults", "char_rnn_corpus_src": str(corpora[name])})
        assert run.returncode != 0
        text = failure(run)
        assert message in text, text
        assert recap(run.stdout) == 0
        assert not host.file(data).exists  # checked on the controller before the host is touched
        seen.append(f"{name}: " + between(text, "corpus ", "LUA51").replace(f"{corpora[name].parent}/", ""))
    row.saw = " | ".join(seen)
    good = playbook(host, "char_rnn.yml", {"char_rnn_dataset": "faults", "char_rnn_corpus_src": str(corpora["good"])})
    assert good.returncode == 0, good.stdout[-3000:]
    deployed = host.file(f"{data}/input.txt")
    assert deployed.sha256sum == hashlib.sha256(corpora["good"].read_bytes()).hexdigest()
    row.recovered, row.lost = "yes (a text corpus deploys)", "none"
