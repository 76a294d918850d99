"""Distro names the EC2 fleet understands, what they imply for Ansible, and the fleet's tags.

Controller-only (plugin_utils): the ``rnn_bootstrap.char_rnn.ec2`` inventory plugin reads the tags
that the ``ec2_fleet`` role writes through the ``rnn_bootstrap.char_rnn.ec2_fleet_tags`` filter.
The role's ``ec2_fleet_images`` default must offer an AMI source for every distro listed here
(a unit-style test in tests/integration/ec2 checks that the two agree).
"""

from __future__ import annotations

import re

# The tags the ec2_fleet role writes and the inventory plugin reads.
FLEET_TAG = "rnn_bootstrap:fleet"
OWNER_TAG = "rnn_bootstrap:owner"
DISTRO_TAG = "rnn_bootstrap:distro"
# Also written on everything the role creates (never read: it tells people where a resource came from).
MANAGED_BY = {"managed-by": "rnn_bootstrap.char_rnn"}

# Image family -> the login user its official AMIs create through cloud-init.
# Rocky's official images use "rocky", not "ec2-user" (unlike RHEL's).
FAMILY_USERS: dict[str, str] = {
    "amazonlinux": "ec2-user",
    "debian": "admin",
    "rhel": "ec2-user",
    "rocky": "rocky",
    "sles": "ec2-user",
    "ubuntu": "ubuntu",
}

DISTROS: tuple[str, ...] = (
    "amazonlinux-2023",
    "debian-12",
    "debian-13",
    "rhel-8",
    "rhel-9",
    "rhel-10",
    "rocky-8",
    "rocky-9",
    "rocky-10",
    "sles-15",
    "sles-16",
    "ubuntu-22.04",
    "ubuntu-24.04",
    "ubuntu-26.04",
)

_DISTRO_RE = re.compile(r"^(?P<family>[a-z]+)-(?P<version>[0-9][0-9.]*)$")


def distro_family(distro: str | None) -> str | None:
    """Return the image family of a distro tag such as ``ubuntu-24.04``, or None if unknown."""
    match = _DISTRO_RE.match((distro or "").strip().lower())
    if not match or match.group("family") not in FAMILY_USERS:
        return None
    return match.group("family")


def login_user(distro: str | None) -> str | None:
    """Return the default SSH user of the official AMIs of ``distro``, or None if unknown."""
    family = distro_family(distro)
    return FAMILY_USERS[family] if family else None


def group_safe(name: str) -> str:
    """Turn a tag value into a valid Ansible group name fragment (``ubuntu-24.04`` -> ``ubuntu_24_04``)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def fleet_tags(fleet: str, owner: str | None = None, distro: str | None = None) -> dict[str, str]:
    """The fleet's tag keys with their values: the fleet, and the owner and distro when given."""
    tags = {FLEET_TAG: fleet}
    if owner is not None:
        tags[OWNER_TAG] = owner
    if distro is not None:
        tags[DISTRO_TAG] = distro
    return tags
