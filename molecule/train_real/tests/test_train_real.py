"""OPT-IN, REAL char-rnn: train as the service, kill -9 once, resume, finish, sample from the best checkpoint."""

from __future__ import annotations

import functools
import json
import re
import statistics
import time

from verify_helpers import PROJECT, playbook_on, unit_property, wait_for

RUN = "real"
UNIT = f"char-rnn-train-{RUN}.service"
LOG = f"/var/log/char-rnn/{RUN}.log"
STATE = f"/var/lib/char-rnn/{RUN}.state.json"
FIGURES = PROJECT / ".cache" / "train-real-figures.json"
PROGRESS_RE = re.compile(
    r"^(\d+)/(\d+) \(epoch [^)]*\), train_loss = \S+, grad/param norm = \S+, time/batch = ([\d.]+)s", re.M
)


show = functools.partial(unit_property, unit=UNIT)


def last_iteration(host):
    found = [int(m.group(1)) for m in PROGRESS_RE.finditer(host.file(LOG).content_string)]
    return found[-1] if found else 0


def test_train_kill_resume_finish_sample(host, tmp_path):
    figures = {}
    started = time.monotonic()
    wait_for(lambda: last_iteration(host) >= 100, 600, "100 iterations")
    pids = host.run("pgrep -u charrnn -f train.lua").stdout.split()
    host.run(f"kill -9 {' '.join(pids)}")
    killed_at = last_iteration(host)
    wait_for(lambda: "loading a model from checkpoint" in host.file(LOG).content_string, 120, "the resume")
    state = json.loads(host.file(STATE).content_string)
    resumed_at = state["segments"][-1]["offset_iterations"]
    figures.update(killed_at=killed_at, resumed_at=resumed_at, iterations_lost=killed_at - resumed_at)
    assert 0 <= killed_at - resumed_at <= 50
    wait_for(lambda: show(host, "SubState") == "exited", 900, "the run to finish")
    assert show(host, "ActiveState") == "active"
    log = host.file(LOG).content_string
    times = [float(m.group(3)) for m in PROGRESS_RE.finditer(log)]
    figures.update(
        wall_seconds=round(time.monotonic() - started),
        median_s_per_batch=statistics.median(times),
        progress_lines=len(times),
        threads=re.findall(r"threads \(.*", log),
        restarts=int(show(host, "NRestarts")),
        total_iterations=json.loads(host.file(STATE).content_string)["total_iterations"],
    )
    status = playbook_on(host, "status.yml")
    assert status.returncode == 0, status.stdout[-3000:]
    figures["status_line"] = re.search(r'"msg": "(run real [^"]*)"', status.stdout).group(1)
    assert f"iteration {figures['total_iterations']}/{figures['total_iterations']}" in figures["status_line"]
    sample = playbook_on(
        host, "sample.yml", "-e", f"char_rnn_sample_dest={tmp_path}", "-e", "char_rnn_sample_length=500"
    )
    assert sample.returncode == 0, sample.stdout[-3000:]
    [text_file] = (tmp_path / host.backend.get_hostname()).glob("lm_real_*.txt")
    text = text_file.read_text()
    figures.update(sample_file=text_file.name, sample_chars=len(text), sample_head=text[:300])
    assert len(text) >= 500
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    FIGURES.write_text(json.dumps(figures, indent=2))
