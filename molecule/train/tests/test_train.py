"""Verify the char_rnn_train service (testinfra, Molecule's verifier), FIXTURE upstream.

Runs in file order: service and checkpoints, kill -9 and the resume, then the collection's
playbooks (status, sample, fetch_checkpoints, train with other states and bad options) against
Molecule's inventory.
"""

from __future__ import annotations

import functools
import json
import re

import pytest
from verify_helpers import playbook_on, recap, unit_property, wait_for

RUN = "molecule"
UNIT = f"char-rnn-train-{RUN}.service"
CHAR_RNN = "/opt/rnn-karpathy"
CV = f"{CHAR_RNN}/cv/{RUN}"
LOG = f"/var/log/char-rnn/{RUN}.log"
STATE = f"/var/lib/char-rnn/{RUN}.state.json"
EVAL_VAL_EVERY = 20
PROGRESS_RE = re.compile(r"^(\d+)/(\d+) \(epoch", re.M)

show = functools.partial(unit_property, unit=UNIT)


def trainer_pids(host) -> list[str]:
    return host.run("pgrep -u charrnn -f 'train.lua'").stdout.split()


def newest_valid_checkpoint(host, before: float) -> str:
    """The launcher's own choice, computed on the host with checkpoints.py (as it does), among the
    checkpoints written before ``before`` (the restarted run may have written one since)."""
    script = (
        "import sys, json; sys.path.insert(0, '/usr/local/libexec/char-rnn'); import checkpoints; "
        f"e = [c for c in checkpoints.discover('{CV}', '{RUN}')['checkpoints'] if c['mtime'] <= {before}]; "
        "n = checkpoints.latest_of(e); print(json.dumps(n['path'] if n else None))"
    )
    return json.loads(host.check_output(f'python3 -c "{script}"'))


def test_service_runs_train_lua_as_the_training_user(host):
    wait_for(lambda: show(host, "ActiveState") == "active", 60, "the unit to be active")
    assert host.service(UNIT).is_enabled
    pids = wait_for(lambda: trainer_pids(host), 60, "train.lua to run")
    for pid in pids:
        assert host.check_output(f"ps -o user= -p {pid}") == "charrnn"
    unit = host.file(f"/etc/systemd/system/{UNIT}").content_string
    assert "Restart=on-failure" in unit and "User=charrnn" in unit


def test_the_unit_is_sandboxed(host):
    """The unit's sandbox is in force on the running trainer, and systemd-analyze scores it <= 2.5."""
    expected = {
        "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
        "PrivateDevices": "yes", "PrivateNetwork": "yes", "CapabilityBoundingSet": "", "ProtectProc": "invisible",
        "SystemCallArchitectures": "native", "MemoryDenyWriteExecute": "no", "RestrictNamespaces": "yes",
        "ReadWritePaths": f"{CV} {CHAR_RNN}/data/tinyshakespeare /var/log/char-rnn /var/lib/char-rnn",
    }  # fmt: skip
    shown = host.check_output(f"systemctl show {UNIT} -p {','.join(expected)}")
    assert dict(line.split("=", 1) for line in shown.splitlines()) == expected
    assert "mbind" in show(host, "SystemCallFilter") and "reboot" not in show(host, "SystemCallFilter")
    # the run itself, not one of the launcher's short thread probes
    wait_for(lambda: "threads (" in host.file(LOG).content_string, 120, "the launcher's thread choice")
    pid = wait_for(lambda: trainer_pids(host), 60, "train.lua to run")[0]
    status = host.file(f"/proc/{pid}/status").content_string
    assert re.search(r"^NoNewPrivs:\s+1$", status, re.M) and re.search(r"^Seccomp:\s+2$", status, re.M), status
    assert re.search(r"^CapBnd:\s+0+$", status, re.M) and re.search(r"^CapEff:\s+0+$", status, re.M), status
    # its own network namespace, with nothing but lo
    interfaces = [
        line.split(":")[0].strip() for line in host.file(f"/proc/{pid}/net/dev").content_string.splitlines()[2:]
    ]
    assert interfaces == ["lo"]
    # in its mount namespace everything is read-only but its own paths, its /tmp and the kernel's API
    # file systems (the last mount on a mount point is the one it sees)
    top = {}
    for line in host.file(f"/proc/{pid}/mountinfo").content_string.splitlines():
        fields = line.split()
        top[fields[4]] = fields[5].split(",")[0]
    writable = {point for point, mode in top.items() if mode == "rw" and not point.startswith(("/proc", "/dev/"))}
    assert top["/"] == top["/run"] == "ro", top
    own = {CV, f"{CHAR_RNN}/data/tinyshakespeare", "/var/log/char-rnn", "/var/lib/char-rnn", "/tmp", "/var/tmp"}
    assert writable == own, top
    analysis = host.check_output(f"systemd-analyze security --no-pager {UNIT}")
    score = float(re.search(r"Overall exposure level for \S+: ([\d.]+)", analysis).group(1))
    assert score <= 2.5, analysis


def test_checkpoints_appear(host):
    wait_for(lambda: host.run(f"ls {CV}/lm_{RUN}_epoch*.t7").rc == 0, 90, f"a checkpoint in {CV}")


def test_log_goes_to_the_file_and_the_journal(host):
    wait_for(lambda: PROGRESS_RE.search(host.file(LOG).content_string), 60, "progress lines in the log")
    journal = host.check_output(f"journalctl -u {UNIT} --no-pager -o cat")
    assert PROGRESS_RE.search(journal), journal[-2000:]
    assert "char-rnn launcher:" in journal and "threads (" in journal


def test_kill_9_resumes_from_the_newest_checkpoint(host):
    restarts_before = int(show(host, "NRestarts"))
    wait_for(lambda: host.run(f"ls {CV}/lm_{RUN}_epoch*.t7").rc == 0, 60, "a checkpoint")
    pids = trainer_pids(host)
    assert pids
    # the time of the kill, in the same shell: checkpoints after it are the restarted run's
    killed = float(host.check_output(f"kill -9 {' '.join(pids)}; date +%s.%N"))
    log_before = host.file(LOG).content_string
    killed_at = max(int(m.group(1)) for m in PROGRESS_RE.finditer(log_before))
    expected = newest_valid_checkpoint(host, killed)
    assert expected, "no valid checkpoint when the trainer was killed"
    wait_for(lambda: int(show(host, "NRestarts")) > restarts_before, 60, "systemd to restart the unit")
    pattern = f"loading a model from checkpoint {expected}"
    wait_for(
        lambda: pattern in host.file(LOG).content_string,
        60,
        pattern,
        detail=lambda: host.run(f"grep -v '/[0-9]* (epoch' {LOG} | tail -n 40; systemctl status {UNIT}").stdout,
    )
    state = json.loads(host.file(STATE).content_string)
    segment = state["segments"][-1]
    assert segment["init_from"] == expected
    lost = killed_at - segment["offset_iterations"]
    assert 0 <= lost <= EVAL_VAL_EVERY, (killed_at, segment)
    # training continues: progress lines after the resume
    wait_for(
        lambda: PROGRESS_RE.search(host.file(LOG).content_string.split(pattern)[-1]), 60, "progress after the resume"
    )
    assert "train.lua was killed by signal 9" in host.file(LOG).content_string


def test_status_playbook_prints_whole_run_progress(host):
    run = playbook_on(host, "status.yml")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    match = re.search(
        rf"run {RUN} \| active \(running\) \| iteration (\d+)/(\d+) \| epoch [\d.]+/40 \| train loss [\d.]+ \| "
        r"[\d.]+ s/batch \| val loss [\d.]+ \| ETA \d+:\d\d:\d\d \| restarts (\d+)",
        run.stdout,
    )
    assert match, run.stdout[-3000:]
    iteration, total, restarts = (int(g) for g in match.groups())
    state = json.loads(host.file(STATE).content_string)
    assert total == state["total_iterations"] == 40 * 190
    assert iteration > state["segments"][-1]["offset_iterations"]  # counted across the restart
    assert restarts >= 1


def test_sample_playbook_saves_text_named_after_the_checkpoint(host, tmp_path):
    run = playbook_on(
        host, "sample.yml", "-e", f"char_rnn_sample_dest={tmp_path}", "-e", "char_rnn_sample_length=300", "-e",
        "char_rnn_sample_checkpoint=best",
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    files = list((tmp_path / host.backend.get_hostname()).glob(f"lm_{RUN}_epoch*.txt"))
    assert len(files) == 1, run.stdout[-2000:]
    assert len(files[0].read_text()) >= 300


def test_sample_without_checkpoint_names_the_directory(host, tmp_path):
    host.run("install -d -o charrnn /tmp/empty-cv")
    run = playbook_on(host, "sample.yml", "-e", "char_rnn_sample_checkpoint_dir=/tmp/empty-cv")
    assert run.returncode != 0
    assert f"no valid checkpoint of run '{RUN}' (savefile {RUN}) in /tmp/empty-cv" in run.stdout, run.stdout[-2000:]


def test_fetch_checkpoints_verifies_and_does_not_fetch_twice(host, tmp_path):
    first = playbook_on(host, "fetch_checkpoints.yml", "-e", f"char_rnn_fetch_dest={tmp_path}")
    assert first.returncode == 0, first.stdout[-3000:]
    assert recap(first.stdout) == 1
    fetched = list((tmp_path / host.backend.get_hostname() / RUN).glob("*.t7"))
    assert len(fetched) == 1
    remote = host.file(f"{CV}/{fetched[0].name}")
    assert remote.exists and remote.sha256sum == __import__("hashlib").sha256(fetched[0].read_bytes()).hexdigest()
    again = playbook_on(host, "fetch_checkpoints.yml", "-e", f"char_rnn_fetch_dest={tmp_path}")
    assert again.returncode == 0, again.stdout[-3000:]
    if recap(again.stdout):  # a better checkpoint may have appeared meanwhile
        assert len(list((tmp_path / host.backend.get_hostname() / RUN).glob("*.t7"))) == 2


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("char_rnn_train_model=transformer", "char_rnn_train_model must be one of: lstm, gru, rnn, got: transformer"),
        ("char_rnn_train_batch_size=0", "char_rnn_train_batch_size must be a positive integer"),
        ("char_rnn_train_dataset=nothing", "/opt/rnn-karpathy/data/nothing/input.txt"),
        ("char_rnn_train_seq_length=5000", "x seq_length 5000 needs at least"),
    ],
)
def test_bad_options_fail_before_the_service_is_touched(host, extra, message):
    invocation = show(host, "InvocationID")
    run = playbook_on(host, "train.yml", "-e", extra)
    assert run.returncode != 0, run.stdout[-2000:]
    assert message in run.stdout, run.stdout[-3000:]
    assert show(host, "InvocationID") == invocation
    assert "Write the run's configuration" not in run.stdout


def test_stop_and_start_are_idempotent(host):
    stop = playbook_on(host, "train.yml", "-e", "char_rnn_train_state=stopped")
    assert stop.returncode == 0 and recap(stop.stdout) == 1, stop.stdout[-3000:]
    assert show(host, "ActiveState") == "inactive"
    assert not trainer_pids(host)
    stop = playbook_on(host, "train.yml", "-e", "char_rnn_train_state=stopped")
    assert stop.returncode == 0 and recap(stop.stdout) == 0, stop.stdout[-3000:]
    start = playbook_on(host, "train.yml")
    assert start.returncode == 0 and recap(start.stdout) == 1, start.stdout[-3000:]
    assert show(host, "ActiveState") == "active"
    start = playbook_on(host, "train.yml")
    assert start.returncode == 0 and recap(start.stdout) == 0, start.stdout[-3000:]
    # a clean stop and start resumed too
    wait_for(lambda: host.file(LOG).content_string.count("resuming run") >= 2, 60, "a second resume")


def test_changing_an_option_restarts_the_run(host):
    invocation = show(host, "InvocationID")
    run = playbook_on(host, "train.yml", "-e", "char_rnn_train_learning_rate=0.001")
    assert run.returncode == 0 and recap(run.stdout) >= 1, run.stdout[-3000:]
    assert show(host, "InvocationID") != invocation
    config = json.loads(host.file(f"/etc/char-rnn/{RUN}.json").content_string)
    assert config["options"]["learning_rate"] == 0.001
    wait_for(lambda: trainer_pids(host), 60, "train.lua to run again")
    # back to the inventory's options (restarts once more)
    assert playbook_on(host, "train.yml").returncode == 0
