"""Fixtures for the EC2 tests: a seeded moto server on 127.0.0.1 and helpers that run the real CLIs."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import boto3
import pytest
from ec2_helpers import (
    AMIS,
    BIN,
    EXPECTED_AMI,
    HERE,
    KEY_NAME,
    OTHER_FLEET,
    REGION,
    REPO,
    SSH_CIDR,
    SSM,
    fleet_instances,
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto server exited: {proc.stderr.read() if proc.stderr else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("moto server did not start")


@pytest.fixture(scope="session")
def console_dir(tmp_path_factory: pytest.TempPathFactory):
    """Where a test puts <instance-id>.txt to make moto show that console output instead (moto_server.py)."""
    return tmp_path_factory.mktemp("console")


@pytest.fixture(scope="session")
def known_hosts(tmp_path_factory: pytest.TempPathFactory):
    """The known_hosts file provision.yml writes and ec2.yml points SSH at (RNN_BOOTSTRAP_KNOWN_HOSTS)."""
    return tmp_path_factory.mktemp("ssh") / "known_hosts"


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory, console_dir) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("moto")
    (tmp / "amis.json").write_text(json.dumps(AMIS))
    (tmp / "seed.json").write_text(json.dumps({"region": REGION, "ssm": SSM, "console_dir": str(console_dir)}))
    port = _free_port()
    env = {**_sandbox_env(), "MOTO_AMIS_PATH": str(tmp / "amis.json")}
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "moto_server.py"), str(port), str(tmp / "seed.json")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _sandbox_env() -> dict[str, str]:
    """Dummy credentials, no shared config, no IMDS, and a dead proxy for anything that is not 127.0.0.1."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ANSIBLE_", "RNN_BOOTSTRAP_"))}
    env.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_REGION=REGION,
        AWS_DEFAULT_REGION=REGION,
        AWS_CONFIG_FILE="/dev/null",
        AWS_SHARED_CREDENTIALS_FILE="/dev/null",
        AWS_EC2_METADATA_DISABLED="true",
        # If some call forgot the endpoint, it fails here instead of reaching AWS.
        HTTP_PROXY="http://127.0.0.1:9",
        HTTPS_PROXY="http://127.0.0.1:9",
        NO_PROXY="127.0.0.1,localhost",
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    return env


@dataclass
class Run:
    rc: int
    stdout: str
    stderr: str

    @property
    def out(self) -> str:
        return self.stdout + self.stderr

    def recap(self) -> dict[str, int]:
        """Counters of the localhost line of the PLAY RECAP."""
        match = re.search(r"^localhost\s+:\s+(.*)$", self.out, re.MULTILINE)
        assert match, self.out
        return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(1))}


@pytest.fixture(scope="session")
def cli(moto_endpoint: str, known_hosts):
    """Run an Ansible CLI from the repository root with the sandbox environment."""

    def run(*args: str, env: dict[str, str] | None = None, timeout: int = 180) -> Run:
        proc = subprocess.run(
            [str(BIN / args[0]), *args[1:]],
            cwd=REPO,
            env={**_sandbox_env(), "RNN_BOOTSTRAP_KNOWN_HOSTS": str(known_hosts), **(env or {})},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        return Run(proc.returncode, proc.stdout, proc.stderr)

    return run


@pytest.fixture(scope="session")
def playbook(cli, moto_endpoint: str):
    """Run one of our playbooks against moto, the endpoint passed as the role's variable (not via env)."""

    def run(name: str, **extra_vars) -> Run:
        extra = {
            "ec2_fleet_endpoint_url": moto_endpoint,
            "ec2_fleet_region": REGION,
            "ec2_fleet_host_keys_delay": 1,  # moto shows the keys from the second read on
            **extra_vars,
        }
        return cli("ansible-playbook", f"playbooks/{name}.yml", "-e", json.dumps(extra))

    return run


@pytest.fixture(scope="session")
def ec2(moto_endpoint: str):
    return boto3.client(
        "ec2",
        region_name=REGION,
        endpoint_url=moto_endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture(scope="session")
def bystanders(ec2, playbook) -> dict[str, str]:
    """What teardown must leave alone: an untagged instance, and another fleet launched by our own playbook."""
    ec2.create_key_pair(KeyName=KEY_NAME)
    untagged = ec2.run_instances(ImageId=EXPECTED_AMI["debian-12"], MinCount=1, MaxCount=1, InstanceType="t3.micro")
    other = playbook(
        "provision",
        ec2_fleet_name=OTHER_FLEET,
        ec2_fleet_distros=[{"distro": "rhel-9", "count": 1}],
        ec2_fleet_key_name=KEY_NAME,
        ec2_fleet_ssh_cidr=SSH_CIDR,
        ec2_fleet_wait_for_ssh=False,
    )
    assert other.rc == 0, other.out
    (other_instance,) = fleet_instances(ec2, OTHER_FLEET)
    return {"untagged": untagged["Instances"][0]["InstanceId"], "other": other_instance["InstanceId"]}


@pytest.fixture(scope="session")
def site_collections_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Collections path under which playbooks/site.yml resolves all its roles.

    site.yml needs rnn_bootstrap.char_rnn.system_deps, which is built on another branch. Until it is merged
    here, overlay this checkout with a stub of that role (--list-hosts never runs it); once it exists, the
    checkout is used as it is.
    """
    if (REPO / "roles" / "system_deps").is_dir():
        return {}
    root = tmp_path_factory.mktemp("collections")
    overlay = root / "ansible_collections" / "rnn_bootstrap" / "char_rnn"
    (overlay / "roles").mkdir(parents=True)
    for entry in REPO.iterdir():
        if entry.name not in {"roles", ".git", ".cache", ".ansible"}:
            (overlay / entry.name).symlink_to(entry)
    for role in (REPO / "roles").iterdir():
        (overlay / "roles" / role.name).symlink_to(role)
    stub = overlay / "roles" / "system_deps" / "tasks"
    stub.mkdir(parents=True)
    (stub / "main.yml").write_text("---\n- name: Stub\n  ansible.builtin.meta: noop\n")
    return {"ANSIBLE_COLLECTIONS_PATH": str(root)}
