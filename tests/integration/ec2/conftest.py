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
from pathlib import Path

import boto3
import pytest

REPO = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent
REGION = "us-east-1"
BIN = Path(sys.executable).parent

CANONICAL, DEBIAN, REDHAT = "099720109477", "136693071363", "309956199498"


def _ami(ami_id: str, owner: str, name: str, created: str, root: str) -> dict:
    return {
        "ami_id": ami_id,
        "state": "available",
        "public": True,
        "owner_id": owner,
        "image_location": f"{owner}/{name}",
        "root_device_type": "ebs",
        "root_device_name": root,
        "description": name,
        "image_type": "machine",
        "architecture": "x86_64",
        "name": name,
        "virtualization_type": "hvm",
        "hypervisor": "xen",
        "creation_date": created,
    }


# Fake "official" images. Each distro has a decoy the lookup must not pick.
AMIS = [
    _ami(
        "ami-0ub24old0000001",
        CANONICAL,
        "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-20240423",
        "2024-04-23T00:00:00.000Z",
        "/dev/sda1",
    ),
    _ami(
        "ami-0ub24cur0000002",
        CANONICAL,
        "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-20250610",
        "2025-06-10T00:00:00.000Z",
        "/dev/sda1",
    ),
    _ami("ami-0deb12cur000003", DEBIAN, "debian-12-amd64-20250610-2137", "2025-06-10T00:00:00.000Z", "/dev/xvda"),
    _ami(
        "ami-0rhel94old00004",
        REDHAT,
        "RHEL-9.4.0_HVM-20240423-x86_64-62-Hourly2-GP3",
        "2024-04-23T00:00:00.000Z",
        "/dev/sda1",
    ),
    _ami(
        "ami-0rhel96cur00005",
        REDHAT,
        "RHEL-9.6.0_HVM-20250601-x86_64-0-Hourly2-GP3",
        "2025-06-01T00:00:00.000Z",
        "/dev/sda1",
    ),
    # Newer, but a beta (name pattern excludes it) or from someone else's account (owner filter excludes it).
    _ami(
        "ami-0rhel98beta0006",
        REDHAT,
        "RHEL-9.8.0_HVM_BETA-20250901-x86_64-0-Hourly2-GP3",
        "2025-09-01T00:00:00.000Z",
        "/dev/sda1",
    ),
    _ami(
        "ami-0rhel97fake0007",
        "111122223333",
        "RHEL-9.7.0_HVM-20250801-x86_64-0-Hourly2-GP3",
        "2025-08-01T00:00:00.000Z",
        "/dev/sda1",
    ),
]
SSM = {
    "/aws/service/canonical/ubuntu/server/24.04/stable/current/amd64/hvm/ebs-gp3/ami-id": "ami-0ub24cur0000002",
    "/aws/service/debian/release/12/latest/amd64": "ami-0deb12cur000003",
}
EXPECTED_AMI = {
    "ubuntu-24.04": "ami-0ub24cur0000002",
    "debian-12": "ami-0deb12cur000003",
    "rhel-9": "ami-0rhel96cur00005",
}
ROOT_DEVICE = {
    "ami-0ub24cur0000002": "/dev/sda1",
    "ami-0deb12cur000003": "/dev/xvda",
    "ami-0rhel96cur00005": "/dev/sda1",
}

FLEET = "rnnci"
OTHER_FLEET = "rnnci-other"
KEY_NAME = "rnnci-key"
SSH_CIDR = "203.0.113.7/32"


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
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("moto")
    (tmp / "amis.json").write_text(json.dumps(AMIS))
    (tmp / "seed.json").write_text(json.dumps({"region": REGION, "ssm": SSM}))
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
    out: str

    def recap(self) -> dict[str, int]:
        """Counters of the localhost line of the PLAY RECAP."""
        match = re.search(r"^localhost\s+:\s+(.*)$", self.out, re.MULTILINE)
        assert match, self.out
        return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(1))}


@pytest.fixture(scope="session")
def cli(moto_endpoint: str):
    """Run an Ansible CLI from the repository root with the sandbox environment."""

    def run(*args: str, env: dict[str, str] | None = None, timeout: int = 180) -> Run:
        proc = subprocess.run(
            [str(BIN / args[0]), *args[1:]],
            cwd=REPO,
            env={**_sandbox_env(), **(env or {})},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        return Run(proc.returncode, proc.stdout + proc.stderr)

    return run


@pytest.fixture(scope="session")
def playbook(cli, moto_endpoint: str):
    """Run one of our playbooks against moto, the endpoint passed as the role's variable (not via env)."""

    def run(name: str, **extra_vars) -> Run:
        extra = {"ec2_fleet_endpoint_url": moto_endpoint, "ec2_fleet_region": REGION, **extra_vars}
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


def fleet_instances(ec2, fleet: str) -> list[dict]:
    """Non-terminated instances carrying the fleet tag."""
    reservations = ec2.describe_instances(
        Filters=[
            {"Name": "tag:rnn_bootstrap:fleet", "Values": [fleet]},
            {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]},
        ]
    )["Reservations"]
    return [i for r in reservations for i in r["Instances"]]


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
