"""Which systemd sandbox settings a real char-rnn training run survives: prints a table, one run each.

NOT part of the default suite: it needs a REAL Torch7 and char-rnn on a host (or container) with
systemd as PID 1 where the role char_rnn_train has installed a throwaway run (README "Sandbox"):

    ansible-playbook playbooks/train.yml -i INVENTORY -e char_rnn_train_run=sandbox-measure \\
        -e char_rnn_train_state=stopped -e char_rnn_train_enabled=false ...
    python3 tests/benchmarks/sandbox.py [--container NAME] [--run sandbox-measure]

The script reads that run's unit and configuration, and for every variant writes a unit of its own,
char-rnn-sandbox-measure.service (in /run/systemd/system, so nothing of the role's is changed;
Restart=no, so a failure shows at once), and a configuration under /run/char-rnn-sandbox-measure/
with the same paths. Each run starts fresh: the run's checkpoints, log and state are deleted, and
so are the data set's data.t7 and vocab.t7, so that train.lua writes them again (it does on a
first run). A variant "trains" when the launcher exits 0, says the run finished and a checkpoint
is there. Variants:

* "no sandbox": the unit without any of the settings below (the role's unit before the sandbox);
* every sandbox setting of the installed unit ALONE on top of that (pairs that only make sense
  together, ProtectSystem with ReadWritePaths, SystemCallFilter with SystemCallErrorNumber, stay
  together), and the settings left off (KEY=no), each alone with KEY=yes;
* "full": the installed unit as it is, then the same with threads=probe (the role's default: the
  launcher times thread settings in child processes), a resume from its checkpoint, and without
  SystemCallErrorNumber= (a forbidden system call kills the process instead of failing: any
  forbidden call the run makes shows); with OMP_PROC_BIND=true (libgomp pins its threads);
  without the filter's exceptions (SystemCallFilter=mbind sched_setaffinity), once with a
  forbidden call killing and once with OMP_PROC_BIND=true; without the data set's folder
  writable; with each setting left off turned on, and MemoryDenyWriteExecute=yes again with
  LuaJIT's JIT off (LUA_INIT=jit.off()).

Each variant has an expected outcome; the script exits 1 when one differs. It also prints
`systemd-analyze security`'s exposure for the unit without the sandbox and for the installed one.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field

UNIT = "char-rnn-sandbox-measure.service"
UNIT_PATH = f"/run/systemd/system/{UNIT}"
CONFIG_DIR = "/run/char-rnn-sandbox-measure"
# Every setting of the role's sandbox (roles/char_rnn_train/templates/char-rnn-train.service.j2).
SANDBOX_KEYS = (
    "NoNewPrivileges", "CapabilityBoundingSet", "AmbientCapabilities", "ProtectSystem", "ReadWritePaths",
    "ReadOnlyPaths", "ProtectHome", "PrivateTmp", "PrivateDevices", "DevicePolicy", "DeviceAllow", "ProcSubset",
    "RestrictAddressFamilies", "PrivateNetwork", "IPAddressDeny", "PrivateUsers", "PrivateMounts", "ProtectClock",
    "ProtectHostname", "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups",
    "ProtectProc", "RestrictNamespaces", "RestrictRealtime", "RestrictSUIDSGID", "RemoveIPC", "LockPersonality",
    "SystemCallArchitectures", "SystemCallFilter", "SystemCallErrorNumber", "UMask", "MemoryDenyWriteExecute",
    "KeyringMode",
)  # fmt: skip
# Settings measured together (one without the other means nothing, or is the systemd default).
TOGETHER = {"ReadWritePaths": "ProtectSystem", "ReadOnlyPaths": "ProtectSystem",
            "SystemCallErrorNumber": "SystemCallFilter", "DeviceAllow": "DevicePolicy"}  # fmt: skip
TIME_RE = re.compile(r"time/batch = ([\d.]+)s")
SAVED_RE = re.compile(r"saving checkpoint to (\S+)")
REASON_RE = re.compile(r"error|denied|fail|protect|not permitted|read-only|signal|cannot", re.I)
# systemd's lines that say nothing about the cause (a container without CAP_NET_ADMIN cannot bring lo up).
NOISE_RE = re.compile(r"loopback network device|Main process exited|Failed with result|time/batch")


@dataclass
class Variant:
    name: str
    lines: list[str]
    expect: bool
    why: str = ""
    config: dict = field(default_factory=dict)  # overrides of the run configuration
    fresh: bool = True


@dataclass
class Outcome:
    trains: bool
    detail: str
    seconds_per_batch: float | None = None
    checkpoint: str = ""


class Host:
    """Runs commands on this machine or, with --container, in a podman container."""

    def __init__(self, container: str | None) -> None:
        self.prefix = ["podman", "exec", "-i", container] if container else []

    def run(self, *argv: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*self.prefix, *argv], input=stdin, capture_output=True, text=True, check=check, timeout=600
        )

    def sh(self, script: str, check: bool = True) -> str:
        return self.run("sh", "-c", script, check=check).stdout

    def write(self, path: str, text: str) -> None:
        self.run("sh", "-c", f"mkdir -p $(dirname {shlex.quote(path)}) && cat > {shlex.quote(path)}", stdin=text)


def split_unit(text: str) -> tuple[list[str], list[str]]:
    """(the unit without its sandbox and [Install] section, the sandbox's setting lines in order)."""
    base, sandbox, section = [], [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            section = stripped
        if section == "[Install]":
            continue
        key = stripped.split("=", 1)[0] if "=" in stripped and not stripped.startswith("#") else ""
        if section == "[Service]" and key in SANDBOX_KEYS:
            sandbox.append(stripped)
        elif not stripped.startswith("#"):
            base.append(line)
    return base, sandbox


def unit_text(base: list[str], extra: list[str], config_path: str) -> str:
    out = []
    for line in base:
        if line.startswith("ExecStart="):
            parts = line.split()
            line = " ".join([*parts[:-1], config_path])
        elif line.startswith("Restart="):
            line = "Restart=no"
        out.append(line)
        if line.strip() == "[Service]":
            out.extend(extra)
    return "\n".join(out) + "\n"


def groups(sandbox: list[str]) -> list[list[str]]:
    """The sandbox's lines grouped per setting (TOGETHER's pairs in one group)."""
    by_key: dict[str, list[str]] = {}
    for line in sandbox:
        key = line.split("=", 1)[0]
        by_key.setdefault(TOGETHER.get(key, key), []).append(line)
    return list(by_key.values())


# The settings the unit leaves off (KEY=no): does KEY=yes train alone, and on top of the rest?
LEFT_OFF = {
    "MemoryDenyWriteExecute": (False, False, "LuaJIT's JIT makes the machine code it writes executable"),
    "PrivateUsers": (True, False, "with ProtectProc=invisible systemd cannot set up the user namespace"),
}


def variants(sandbox: list[str], config: dict) -> list[Variant]:
    found = [Variant("no sandbox", [], True)]
    off = [line.split("=", 1)[0] for line in sandbox if line.split("=", 1)[0] in LEFT_OFF and line.endswith("=no")]
    for group in groups(sandbox):
        if group[0].split("=", 1)[0] not in off:
            found.append(Variant(" + ".join(group), group, True))
    for key in off:
        alone, _together, why = LEFT_OFF[key]
        found.append(Variant(f"{key}=yes alone", [f"{key}=yes"], alone, "" if alone else why))
    found.append(Variant("full sandbox (the installed unit)", sandbox, True))
    found.append(Variant("full, threads=probe", sandbox, True, config={"threads": "probe"}))
    found.append(
        Variant("full, resume from the checkpoint (max_epochs x2)", sandbox, True, fresh=False,
                config={"options": {"max_epochs": 2 * float(config["options"]["max_epochs"])}})
    )  # fmt: skip
    found.append(
        Variant("full, a forbidden system call kills (no SystemCallErrorNumber=)",
                [line for line in sandbox if not line.startswith("SystemCallErrorNumber=")], True)
    )  # fmt: skip
    found.append(
        Variant("full, OMP_PROC_BIND=true (libgomp pins its threads)", sandbox, True,
                config={"environment": {"OMP_PROC_BIND": "true"}})
    )  # fmt: skip
    # The filter's exceptions (SystemCallFilter=name ..., after the ~@group lines): what they are for.
    strict = [line for line in sandbox if not re.match(r"SystemCallFilter=[a-z_]", line)]
    if strict != sandbox:
        kill = [line for line in strict if not line.startswith("SystemCallErrorNumber=")]
        found.append(
            Variant("full without the filter's exceptions, a forbidden call kills", kill, False,
                    "OpenBLAS calls mbind (in @resources) for its buffers")
        )  # fmt: skip
        found.append(
            Variant("full without the filter's exceptions, OMP_PROC_BIND=true", strict, False,
                    "libgomp pins its threads with sched_setaffinity (in @resources)",
                    config={"environment": {"OMP_PROC_BIND": "true"}})
        )  # fmt: skip
    data_dir = f"{config['char_rnn_dir']}/{config['options']['data_dir']}"
    without_data = [
        " ".join(p for p in line.split(" ") if p != data_dir) if line.startswith("ReadWritePaths=") else line
        for line in sandbox
    ]
    if without_data != sandbox:
        found.append(
            Variant("full, data set folder not writable", without_data, False,
                    "train.lua writes data.t7 and vocab.t7 beside input.txt")
        )  # fmt: skip
    for key in off:
        _alone, together, why = LEFT_OFF[key]
        lines = [line for line in sandbox if not line.startswith(f"{key}=")] + [f"{key}=yes"]
        found.append(Variant(f"full + {key}=yes", lines, together, why))
        if key == "MemoryDenyWriteExecute":
            found.append(
                Variant(f"full + {key}=yes, JIT off (LUA_INIT=jit.off())", lines, True,
                        config={"environment": {"LUA_INIT": "jit.off()"}})
            )  # fmt: skip
    return found


def merged(config: dict, overrides: dict) -> dict:
    out = json.loads(json.dumps(config))
    for key, value in overrides.items():
        if isinstance(value, dict):
            out[key] = {**(out.get(key) or {}), **value}
        else:
            out[key] = value
    return out


def reset(host: Host, config: dict) -> None:
    """Delete the run's checkpoints, log and state, and the data set's preprocessed files."""
    data_dir = shlex.quote(f"{config['char_rnn_dir']}/{config['options']['data_dir']}")
    host.sh(
        f"rm -f {shlex.quote(config['checkpoint_path'])}/*.t7 {shlex.quote(config['state_path'])} "
        f"{shlex.quote(config['log_path'])} {data_dir}/data.t7 {data_dir}/vocab.t7"
    )


def measure(host: Host, base: list[str], variant: Variant, config: dict, timeout: float) -> Outcome:
    host.run("systemctl", "stop", UNIT, check=False)
    host.run("systemctl", "reset-failed", UNIT, check=False)
    if variant.fresh:
        reset(host, config)
    run_config = merged(config, variant.config)
    config_path = f"{CONFIG_DIR}/config.json"
    host.write(config_path, json.dumps(run_config, indent=2) + "\n")
    host.write(UNIT_PATH, unit_text(base, variant.lines, config_path))
    host.run("systemctl", "daemon-reload")
    host.run("systemctl", "start", UNIT, check=False)
    deadline = time.monotonic() + timeout
    props: dict[str, str] = {}
    while time.monotonic() < deadline:
        out = host.run(
            "systemctl", "show", "-p", "ActiveState,SubState,Result,ExecMainCode,ExecMainStatus,InvocationID", UNIT
        ).stdout
        props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        if props.get("SubState") in ("exited", "failed", "dead"):
            break
        time.sleep(1)
    else:
        host.run("systemctl", "stop", UNIT, check=False)
        return Outcome(False, f"still running after {timeout:.0f} s")
    log = host.run("cat", run_config["log_path"], check=False).stdout
    invocation = props.get("InvocationID", "")
    journal = host.run(  # the run's output and what systemd said about it
        "journalctl", "--no-pager", "-o", "cat", f"_SYSTEMD_INVOCATION_ID={invocation}", "+",
        f"INVOCATION_ID={invocation}", check=False,
    ).stdout  # fmt: skip
    times = [float(t) for t in TIME_RE.findall(log)]
    saved = SAVED_RE.findall(log)
    checkpoints = host.sh(f"ls {shlex.quote(run_config['checkpoint_path'])} | grep -c '\\.t7$' || true").strip()
    finished = f"run {run_config['run']} finished" in log
    status = f"{props.get('Result')}, status {props.get('ExecMainStatus')}"
    ok = props.get("Result") == "success" and props.get("ExecMainStatus") == "0" and finished and checkpoints != "0"
    if ok:
        resumed = ", resumed" if "resuming run" in log else ""
        detail = f"{status}, {len(times)} batches, {checkpoints} checkpoint(s){resumed}"
    else:
        lines = [ln.strip() for ln in log.splitlines() + journal.splitlines() if ln.strip() and not NOISE_RE.search(ln)]
        wanted = list(dict.fromkeys(ln for ln in lines if REASON_RE.search(ln)))
        detail = f"{status}: " + " | ".join(wanted[:2] or lines[-2:])[:300]
    spb = statistics.median(times[len(times) // 4 :]) if times else None
    return Outcome(ok, detail, spb, saved[-1].rsplit("/", 1)[-1] if saved else "")


def exposure(host: Host, unit: str) -> str:
    out = host.run("systemd-analyze", "security", "--no-pager", unit, check=False).stdout
    match = re.search(r"Overall exposure level for \S+: ([\d.]+ \w+)", out)
    return match.group(1) if match else "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--container", help="podman container to run in (default: this host)")
    parser.add_argument("--run", default="sandbox-measure", help="the role's run to measure (its files are deleted)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds a variant may take")
    parser.add_argument("--only", help="regular expression: measure only the variants whose name matches")
    args = parser.parse_args(argv)
    host = Host(args.container)
    installed = f"char-rnn-train-{args.run}.service"
    config = json.loads(host.run("cat", f"/etc/char-rnn/{args.run}.json").stdout)
    base, sandbox = split_unit(host.run("cat", f"/etc/systemd/system/{installed}").stdout)
    if not sandbox:
        print(f"{installed} has no sandbox settings (char_rnn_train_sandbox: false?)", file=sys.stderr)
        return 2
    wrong, rows, before = 0, [], "?"
    for variant in variants(sandbox, config):
        if args.only and not re.search(args.only, variant.name):
            continue
        outcome = measure(host, base, variant, config, args.timeout)
        if variant.name == "no sandbox":
            before = exposure(host, UNIT)
        mismatch = outcome.trains != variant.expect
        wrong += mismatch
        spb = f"{outcome.seconds_per_batch:.4f}" if outcome.seconds_per_batch is not None else "-"
        row = (
            f"| {variant.name} | {'yes' if outcome.trains else 'NO'} | {spb} | {outcome.checkpoint or '-'} | "
            f"{outcome.detail}{'; ' + variant.why if variant.why else ''}"
            f"{' **UNEXPECTED**' if mismatch else ''} |"
        )
        rows.append(row)
        print(row, flush=True)
    host.run("systemctl", "stop", UNIT, check=False)
    host.run("rm", "-f", UNIT_PATH)
    host.run("systemctl", "daemon-reload")
    print()
    print("| variant | trains | s/batch | last checkpoint | systemd's result and the log's reason |")
    print("| --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    print()
    if not args.only or re.search(args.only, "no sandbox"):
        print(f"systemd-analyze security, without the sandbox: {before}")
    print(f"systemd-analyze security {installed}: {exposure(host, installed)}")
    if wrong:
        print(f"{wrong} variant(s) did not do what was expected", file=sys.stderr)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
