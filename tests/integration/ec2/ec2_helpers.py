"""Constants and helpers shared by the EC2 tests (a plain module: `conftest` names collide across test dirs)."""

from __future__ import annotations

import sys
from pathlib import Path

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


def fleet_instances(ec2, fleet: str) -> list[dict]:
    """Non-terminated instances carrying the fleet tag."""
    reservations = ec2.describe_instances(
        Filters=[
            {"Name": "tag:rnn_bootstrap:fleet", "Values": [fleet]},
            {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]},
        ]
    )["Reservations"]
    return [i for r in reservations for i in r["Instances"]]
