# Copyright: rnn_bootstrap maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter ``ec2_fleet_tags``: an EC2 fleet's tags for the ec2_fleet role (keys: plugin_utils/ec2_distros.py)."""

from __future__ import annotations

from typing import Any

from ansible_collections.rnn_bootstrap.char_rnn.plugins.plugin_utils.ec2_distros import MANAGED_BY, fleet_tags

DOCUMENTATION = r"""
name: ec2_fleet_tags
short_description: The tags of an EC2 fleet, to write or to filter by
version_added: "0.1.0"
description:
  - The tags the role C(rnn_bootstrap.char_rnn.ec2_fleet) writes on a fleet's instances and security group, and
    that the inventory plugin P(rnn_bootstrap.char_rnn.ec2#inventory) reads - C(rnn_bootstrap:fleet),
    C(rnn_bootstrap:owner), C(rnn_bootstrap:distro) - so that both use the same keys.
  - To write, the tags also carry C(managed-by=rnn_bootstrap.char_rnn); as EC2 filters (O(filters=true)), the keys
    are prefixed with C(tag:) and only the given values are matched.
author:
  - rnn_bootstrap maintainers (@rnn-bootstrap)
options:
  _input:
    description: The fleet name (C(ec2_fleet_name)).
    type: str
    required: true
  owner:
    description: The fleet's owner; left out when not given.
    type: str
  distro:
    description: The distro of an instance, for example C(ubuntu-24.04); left out when not given.
    type: str
  filters:
    description: Return EC2 filters (C(tag:KEY)) that select these tags instead of the tags.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Tag a security group with the fleet and its owner
  amazon.aws.ec2_security_group:
    name: "{{ ec2_fleet_name }}-ssh"
    description: SSH
    tags: "{{ ec2_fleet_name | rnn_bootstrap.char_rnn.ec2_fleet_tags(owner=ec2_fleet_owner) }}"

- name: Find the fleet's Debian 12 instances
  amazon.aws.ec2_instance_info:
    filters: "{{ ec2_fleet_name | rnn_bootstrap.char_rnn.ec2_fleet_tags(distro='debian-12', filters=true) }}"
"""

RETURN = r"""
_value:
  description:
    - >-
      The tags, for example C({"rnn_bootstrap:fleet": "char-rnn", "rnn_bootstrap:owner": "me",
      "managed-by": "rnn_bootstrap.char_rnn"}); with O(filters=true), for example
      C({"tag:rnn_bootstrap:fleet": "char-rnn", "tag:rnn_bootstrap:distro": "debian-12"}).
  type: dict
"""


def ec2_fleet_tags(fleet: str, owner: str | None = None, distro: str | None = None, filters: bool = False) -> dict:
    tags = fleet_tags(fleet, owner, distro)
    if filters:
        return {f"tag:{key}": value for key, value in tags.items()}
    return {**tags, **MANAGED_BY}


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"ec2_fleet_tags": ec2_fleet_tags}
