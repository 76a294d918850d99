"""What a fleet costs: one Torch7 build per platform, measured. Prints figures; NOT a timed test.

Needs the REAL upstream through a loopback mirror (../shared/upstream/README.md) and the test
bed's Debian 12 image (`python tests/containers/testbed.py images debian-12`):

    CHARRNN_REAL_UPSTREAM=git://127.0.0.1:9418/github.com/ python tests/benchmarks/fleet.py

Every row starts from fresh containers of the same image (systemd as PID 1, --network=host), on
this machine, one after the other in one run, so that the ratios compare like with like:

  (a) the raw upstream path on one host: apt dependencies, recursive clone, torch/distro's own
      install.sh (non-interactive), then the rocks char-rnn needs and char-rnn itself
  (b) site.yml cold on one host (an empty artifact store)
  (c) site.yml cold on four hosts, the store empty: one builds, three install its artifact
  (d) site.yml on four fresh hosts, the store holding the artifact from (c)
  (e) a re-run of (d): nothing to change
  (f) site.yml on one fresh host with the store holding the artifact: that host's own work
  (g) on the host of (b): playbooks/train.yml with char-rnn's default model and eval_val_every
      1000, until the first checkpoint is written

  (e') the same re-run over the other connection (podman exec when the rows run over SSH):
      Ansible's per-task cost on each, on the same hosts

`--connection ssh` (the default) reaches the hosts as a fleet is reached: OpenSSH with pipelining
and ControlPersist (ansible.cfg), each container running sshd on its own loopback port, host keys
checked against a known_hosts file the benchmark writes. The containers come from the test image
plus openssh-server (built once, `localhost/charrnn-test/debian-12-ssh`). `--connection podman`
uses the test bed's podman connection instead, which cannot pipeline.

The targets (README): (b) <= 0.8 (a); (c) <= 1.5 (b); (d) <= 0.5 (b); (e) <= 20 s with 0
changed; (f) under 60 s.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
IMAGE = "localhost/charrnn-test/debian-12:latest"
SSH_IMAGE = "localhost/charrnn-test/debian-12-ssh:latest"
SSH_CONTAINERFILE = f"""FROM {IMAGE}
RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \\
    openssh-server && rm -rf /var/lib/apt/lists/* /etc/ssh/ssh_host_* && systemctl disable ssh
"""
# Host keys are made per container at start; sshd starts once its port is configured (not at boot,
# where it would fail without keys and loop into systemd's start limit).
FIRST_SSH_PORT = 2201
PREFIX = "bench-fleet"
DISTRO_COMMIT_VAR = "torch7_version"
# What upstream's install-deps installs that a CPU build on Debian 12 needs (install-deps itself
# asks for Qt 4 and other packages Debian 12 no longer has).
RAW_APT = (
    "build-essential cmake git curl unzip libreadline-dev libncurses-dev libjpeg-dev libpng-dev libopenblas-dev"
    " ca-certificates"
)
RECAP = re.compile(r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def sh(*argv: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), check=check, text=True, capture_output=True, **kw)


def role_default(role: str, name: str) -> str:
    import yaml

    return str(yaml.safe_load((REPO / "roles" / role / "defaults" / "main.yml").read_text())[name])


class Containers:
    """Fresh containers of the test image; removed at the end of each row.

    Over SSH each container gets its own host keys and an sshd on its own loopback port (the
    containers share the host's network), and its keys go into the benchmark's known_hosts.
    """

    def __init__(self, work: Path, connection: str) -> None:
        self.names: list[str] = []
        self.work = work
        self.connection = connection
        self.ports: dict[str, int] = {}
        self.next_port = FIRST_SSH_PORT  # never reused: no stale ControlPersist socket meets a new host
        if connection == "ssh":
            self.key = work / "id_ed25519"
            self.known_hosts = work / "known_hosts"
            sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key))
            if sh("podman", "image", "exists", SSH_IMAGE, check=False).returncode != 0:
                sh("podman", "build", "--network=host", "-t", SSH_IMAGE, "-f", "-", str(work), input=SSH_CONTAINERFILE)

    @property
    def image(self) -> str:
        return SSH_IMAGE if self.connection == "ssh" else IMAGE

    def start(self, count: int, tag: str) -> list[str]:
        names = [f"{PREFIX}-{tag}-{i}" for i in range(1, count + 1)]
        for name in names:
            sh("podman", "rm", "-f", name, check=False)
            sh("podman", "run", "-d", "--name", name, "--network=host", "--systemd=always", self.image, "/sbin/init")
        self.names += names
        for name in names:  # systemd up before anything runs
            for _attempt in range(60):
                state = sh("podman", "exec", name, "systemctl", "is-system-running", check=False).stdout.strip()
                if state in ("running", "degraded"):
                    break
                time.sleep(0.5)
            if self.connection == "ssh":
                self.start_sshd(name, self.next_port)
                self.next_port += 1
        return names

    def start_sshd(self, name: str, port: int) -> None:
        config = f"Port {port}\nListenAddress 127.0.0.1\nPermitRootLogin prohibit-password\n"
        script = (
            "ssh-keygen -A >/dev/null && install -d -m 700 /root/.ssh"
            " && printf '%s\\n' \"$KEY\" >/root/.ssh/authorized_keys"
            f" && printf '{config}' >/etc/ssh/sshd_config.d/bench.conf"
            " && systemctl start ssh"
        )
        key = (self.key.with_suffix(".pub")).read_text().strip()
        sh("podman", "exec", "-e", f"KEY={key}", name, "bash", "-c", script)
        for _attempt in range(40):
            scan = sh("ssh-keyscan", "-t", "ed25519", "-p", str(port), "127.0.0.1", check=False)
            if scan.stdout.strip():
                break
            time.sleep(0.25)
        else:
            sys.exit(f"sshd in {name} did not answer on 127.0.0.1:{port}")
        with self.known_hosts.open("a") as known:
            known.write(scan.stdout)
        self.ports[name] = port

    def host_vars(self, name: str, connection: str | None = None) -> dict[str, object]:
        if (connection or self.connection) == "podman":
            return {"ansible_connection": "containers.podman.podman"}
        return {
            "ansible_connection": "ssh",
            "ansible_host": "127.0.0.1",
            "ansible_port": self.ports[name],
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(self.key),
            "ansible_ssh_common_args": f"-o UserKnownHostsFile={self.known_hosts} -o StrictHostKeyChecking=yes",
        }

    def remove_all(self) -> None:
        for name in self.names:
            sh("podman", "rm", "-f", name, check=False)
        self.names = []
        self.ports = {}
        if self.connection == "ssh":
            self.known_hosts.write_text("")


def inventory(
    path: Path, containers: Containers, hosts: list[str], upstream: str, store: Path, connection: str | None = None
) -> Path:
    variables = {
        "git_mirrors_url_rewrites": [{"url": upstream, "insteadof": "https://github.com/"}],
        "torch7_artifact_store": str(store),
        "torch7_artifact_staging": str(store.parent / "staging"),
    }
    hostvars = {h: containers.host_vars(h, connection) for h in hosts}
    path.write_text(json.dumps({"all": {"hosts": hostvars, "vars": variables}}))
    return path


def playbook(inv: Path, play: str, *extra: str) -> tuple[float, dict[str, int], str]:
    """Run a playbook; returns (seconds, changed per host, output). Fails loudly on failure."""
    started = time.monotonic()
    proc = subprocess.run(
        [shutil.which("ansible-playbook") or "ansible-playbook", "-i", str(inv), play, *extra],
        cwd=REPO, text=True, capture_output=True, check=False,
        env={**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"},
    )  # fmt: skip
    seconds = time.monotonic() - started
    recap = {m[0]: int(m[2]) for m in RECAP.findall(proc.stdout)}
    failed = [m[0] for m in RECAP.findall(proc.stdout) if int(m[4]) or int(m[3])]
    if proc.returncode != 0 or failed:
        sys.exit(f"{play} failed on {failed or 'the run'}:\n{proc.stdout[-5000:]}\n{proc.stderr[-2000:]}")
    return seconds, recap, proc.stdout


def raw_upstream(name: str, upstream: str) -> dict[str, float]:
    """(a): what a user does by hand, step by step, in one container."""
    distro = role_default("torch7", DISTRO_COMMIT_VAR)
    char_rnn = role_default("char_rnn", "char_rnn_version")
    rewrite = f"git config --global url.{upstream}.insteadOf https://github.com/"
    steps = {
        "apt dependencies": f"apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q {RAW_APT}",
        "recursive clone": f"{rewrite} && git clone -q --recursive https://github.com/torch/distro.git ~/torch"
        f" && cd ~/torch && git checkout -q {distro} && git submodule update -q --init --recursive",
        "install.sh": "cd ~/torch && ./install.sh -s </dev/null",
        "rocks and char-rnn": "~/torch/install/bin/luarocks list nngraph | grep -q nngraph"
        " && ~/torch/install/bin/luarocks list optim | grep -q optim"
        " && git clone -q https://github.com/karpathy/char-rnn.git ~/char-rnn"
        f" && git -C ~/char-rnn checkout -q {char_rnn}"
        " && ~/torch/install/bin/th -e \"require 'nngraph'; require 'optim'; print('OK')\" | grep -q OK",
    }
    times = {}
    for step, command in steps.items():
        started = time.monotonic()
        proc = sh("podman", "exec", name, "bash", "-lc", command, check=False)
        times[step] = time.monotonic() - started
        if proc.returncode != 0:
            sys.exit(f"(a) {step} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return times


def first_checkpoint(inv: Path, host: str) -> float:
    """(g): train.yml with the default model until the first checkpoint (eval_val_every 1000)."""
    started = time.monotonic()
    playbook(inv, "playbooks/train.yml", "-e", "char_rnn_train_run=bench", "-e", "char_rnn_train_eval_val_every=1000")
    while time.monotonic() - started < 3600:
        found = sh("podman", "exec", host, "bash", "-c", "ls /opt/rnn-karpathy/cv/bench/*.t7 2>/dev/null", check=False)
        if found.stdout.strip():
            return time.monotonic() - started
        time.sleep(5)
    sys.exit("no checkpoint within an hour")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream", default=os.environ.get("CHARRNN_REAL_UPSTREAM", ""))
    parser.add_argument("--skip-raw", action="store_true", help="leave out (a)")
    parser.add_argument("--skip-train", action="store_true", help="leave out (g)")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--connection", choices=("ssh", "podman"), default="ssh", help="how Ansible reaches the hosts")
    parser.add_argument(
        "--store",
        help="an artifact store already holding this image's Torch7 artifact (real upstream): "
        "runs only the rows that install it, (d) (e) (e') (f); the store is copied, not changed",
    )
    opts = parser.parse_args()
    if not opts.upstream:
        sys.exit("needs the real upstream: CHARRNN_REAL_UPSTREAM=git://127.0.0.1:9418/github.com/")
    work = Path(tempfile.mkdtemp(prefix="bench-fleet-", dir="/var/tmp"))
    bench = Bench(work, Containers(work, opts.connection), opts.upstream)
    figures = bench.figures
    try:
        if opts.store:
            shutil.copytree(opts.store, bench.store)
        else:
            if not opts.skip_raw:
                bench.row_a()
            bench.row_b(train=not opts.skip_train)
            bench.row_c()
        bench.rows_d_e()
        bench.row_f()
    finally:
        bench.containers.remove_all()
    report(figures)
    if opts.json:
        Path(opts.json).write_text(json.dumps(figures, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    return 0


class Bench:
    """The rows, one after another on the same machine; figures in seconds."""

    def __init__(self, work: Path, containers: Containers, upstream: str) -> None:
        self.work, self.containers, self.upstream = work, containers, upstream
        self.store = work / "store-cd"
        self.figures: dict[str, object] = {"connection": containers.connection}

    def inventory(self, name: str, hosts: list[str], store: Path, connection: str | None = None) -> Path:
        return inventory(self.work / f"{name}.json", self.containers, hosts, self.upstream, store, connection)

    def say(self, key: str, label: str, extra: str = "") -> None:
        print(f"({key}) {label}: {self.figures[key]:.0f} s{extra}", flush=True)

    def row_a(self) -> None:
        (host,) = self.containers.start(1, "a")
        raw = raw_upstream(host, self.upstream)
        self.figures["a"], self.figures["a_steps"] = sum(raw.values()), raw
        self.containers.remove_all()
        self.say("a", "raw upstream path, 1 host", "  " + json.dumps({k: round(v) for k, v in raw.items()}))

    def row_b(self, train: bool) -> None:
        hosts = self.containers.start(1, "b")
        inv = self.inventory("b", hosts, self.work / "store-b")
        self.figures["b"] = playbook(inv, "site.yml")[0]
        self.say("b", "site.yml cold, 1 host")
        if train:
            self.figures["g"] = first_checkpoint(inv, hosts[0])
            self.say("g", "train.yml to the first checkpoint (eval_val_every 1000)")
        self.containers.remove_all()

    def row_c(self) -> None:
        hosts = self.containers.start(4, "c")
        self.figures["c"] = playbook(self.inventory("c", hosts, self.store), "site.yml")[0]
        self.say("c", "site.yml cold, 4 hosts, store empty")
        self.containers.remove_all()

    def rows_d_e(self) -> None:
        hosts = self.containers.start(4, "d")
        inv = self.inventory("d", hosts, self.store)
        self.figures["d"] = playbook(inv, "site.yml")[0]
        self.say("d", "site.yml, 4 fresh hosts, store holding the artifact")
        self.figures["e"], changed = playbook(inv, "site.yml")[:2]
        self.figures["e_changed"] = sum(changed.values())
        self.say("e", "re-run of (d)", f", changed={self.figures['e_changed']}")
        if self.containers.connection == "ssh":  # podman exec needs no sshd: the same hosts, the other way
            self.figures["e_other"], changed = playbook(
                self.inventory("d-podman", hosts, self.store, "podman"), "site.yml"
            )[:2]
            self.figures["e_other_changed"] = sum(changed.values())
            self.say("e_other", "the same re-run over podman exec", f", changed={self.figures['e_other_changed']}")
        self.containers.remove_all()

    def row_f(self) -> None:
        hosts = self.containers.start(1, "f")
        self.figures["f"] = playbook(self.inventory("f", hosts, self.store), "site.yml")[0]
        self.say("f", "site.yml, 1 fresh host, store holding the artifact")
        self.containers.remove_all()


def report(f: dict) -> None:
    rows = [
        ("(a) raw upstream path, 1 host", f.get("a"), None),
        ("(b) site.yml cold, 1 host", f.get("b"), None),
        ("(c) site.yml cold, 4 hosts, store empty", f.get("c"), None),
        ("(d) site.yml, 4 fresh hosts, artifact in store", f["d"], None),
        ("(e) re-run of (d)", f["e"], f"changed={f['e_changed']}"),
        ("(e') the same re-run over podman exec", f.get("e_other"), f"changed={f.get('e_other_changed', '-')}"),
        ("(f) 1 fresh host installs the artifact", f["f"], None),
        ("(g) train.yml to first checkpoint", f.get("g"), "default model, eval_val_every 1000"),
    ]
    print(f"\nfleet benchmark (this machine: {os.cpu_count()} CPUs; connection: {f['connection']})")
    for label, seconds, note in rows:
        shown = f"{seconds:7.0f} s" if seconds is not None else "    n/a"
        print(f"  {label:<48} {shown}" + (f"  {note}" if note and seconds is not None else ""))
    print("ratios and targets")
    checks = []
    b = f.get("b")
    if f.get("a") and b:
        checks.append(("(b)/(a)", b / f["a"], 0.8))
    if b:
        checks += [("(c)/(b)", f["c"] / b, 1.5), ("(d)/(b)", f["d"] / b, 0.5)]
    for label, ratio, target in checks:
        print(f"  {label:<10} {ratio:5.2f}  target <= {target}  {'met' if ratio <= target else 'MISSED'}")
    rerun_ok = f["e"] <= 20 and not f["e_changed"]
    print(f"  (e)        {f['e']:5.0f} s target <= 20 s, 0 changed  {'met' if rerun_ok else 'MISSED'}")
    if f.get("e_other"):
        print(f"  (e')/(e)   {f['e_other'] / f['e']:5.2f}  what the podman connection costs against SSH")
    print(f"  (f)        {f['f']:5.0f} s target < 60 s  {'met' if f['f'] < 60 else 'MISSED'}")


if __name__ == "__main__":
    sys.exit(main())
