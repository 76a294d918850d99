# Copyright: rnn_bootstrap maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: ec2
short_description: The EC2 hosts of a char-rnn fleet, grouped by fleet and distro
description:
  - Lists the EC2 instances that the C(rnn_bootstrap.char_rnn.ec2_fleet) role launched, selected by their
    C(rnn_bootstrap:fleet) tag, so that C(ansible-playbook site.yml -i ec2.yml) reaches them.
  - Built on P(amazon.aws.aws_ec2#inventory), which does the EC2 calls, credentials, regions and caching.
    Unlike that plugin it accepts any file whose name ends in C(ec2.yml) or C(ec2.yaml), including a plain C(ec2.yml).
  - Puts every host into C(fleet_<fleet>), C(distro_<distro>) and C(family_<family>) groups
    (for example C(fleet_char_rnn), C(distro_ubuntu_24_04), C(family_ubuntu)).
  - Sets C(ansible_user) from the C(rnn_bootstrap:distro) tag (C(ec2-user) for Amazon Linux, RHEL and SLES,
    C(ubuntu) for Ubuntu, C(admin) for Debian, C(rocky) for Rocky Linux) and C(ansible_host) to the public
    or private IPv4 address. O(compose) can override both.
  - The inventory hostname is the instance ID unless O(hostnames) says otherwise.
  - Sets C(ansible_ssh_common_args) so that SSH checks each host's key against O(known_hosts), where
    C(playbooks/provision.yml) recorded it from the instance's console output, under the instance ID
    (C(-o UserKnownHostsFile=<known_hosts> -o StrictHostKeyChecking=yes -o HostKeyAlias=<instance ID>)),
    so that a host whose key is not there, or differs, is refused. O(compose) can override it.
notes:
  - Credentials come from the standard AWS sources only (environment, shared profile, instance role).
  - boto3 also honours C(AWS_ENDPOINT_URL); O(endpoint_url) is meant for AWS-compatible test endpoints such as moto.
author:
  - rnn_bootstrap maintainers (@rnn-bootstrap)
extends_documentation_fragment:
  - inventory_cache
  - constructed
  - amazon.aws.boto3
  - amazon.aws.common.plugins
  - amazon.aws.region.plugins
  - amazon.aws.assume_role.plugins
options:
  plugin:
    description: Marks this file as a configuration of this plugin.
    type: str
    required: true
    choices: [rnn_bootstrap.char_rnn.ec2]
  fleet:
    description:
      - The fleet to list, matched against the C(rnn_bootstrap:fleet) tag.
      - An empty string lists the hosts of every fleet (every instance that has the tag).
    type: str
    default: char-rnn
    env:
      - name: RNN_BOOTSTRAP_FLEET
  address:
    description:
      - Which IPv4 address becomes C(ansible_host).
      - V(public) falls back to the private address for an instance that has no public one.
    type: str
    choices: [public, private]
    default: public
    env:
      - name: RNN_BOOTSTRAP_EC2_ADDRESS
  regions:
    description:
      - Regions to search.
      - When empty, the O(region) option (or C(AWS_REGION)) is used, then the region of the boto3 session
        (C(AWS_DEFAULT_REGION), the profile); only when none is set are all regions searched.
    type: list
    elements: str
    default: []
  filters:
    description:
      - Extra C(DescribeInstances) filters, added to the fleet tag filter (which always wins).
      - Without an C(instance-state-name) filter only running instances are listed.
    type: dict
    default: {}
  hostnames:
    description:
      - Preference list for the inventory hostname, as in P(amazon.aws.aws_ec2#inventory).
    type: list
    elements: raw
    default: [instance-id]
  strict_permissions:
    description: Fail on an C(UnauthorizedOperation) error instead of skipping the region.
    type: bool
    default: true
  known_hosts:
    description:
      - The known_hosts file SSH checks the hosts' keys against (the role C(ec2_fleet)'s C(ec2_fleet_known_hosts)).
      - An empty value leaves C(ansible_ssh_common_args) unset (SSH then uses its own configuration).
    type: str
    default: ~/.ssh/known_hosts.rnn_bootstrap
    env:
      - name: RNN_BOOTSTRAP_KNOWN_HOSTS
  endpoint_url:
    description:
      - URL to use instead of the default AWS endpoints, for AWS-compatible services such as moto.
    type: str
    aliases: [aws_endpoint_url]
    env:
      - name: AWS_URL
      - name: AWS_ENDPOINT_URL_EC2
      - name: AWS_ENDPOINT_URL
"""

EXAMPLES = r"""
# ec2.yml: the default fleet (char-rnn) in the region of AWS_REGION, reached over public addresses.
plugin: rnn_bootstrap.char_rnn.ec2

---
# A named fleet in two regions, over private addresses (the controller runs inside the VPC).
plugin: rnn_bootstrap.char_rnn.ec2
fleet: lab-gpu
regions: [eu-west-1, us-east-1]
address: private
keyed_groups:
  - key: instance_type
    prefix: type
"""

import contextlib
import os
import shlex

from ansible.errors import AnsibleParserError
from ansible_collections.amazon.aws.plugins.inventory.aws_ec2 import InventoryModule as AwsEc2InventoryModule
from ansible_collections.amazon.aws.plugins.plugin_utils.inventory import AWSInventoryBase
from ansible_collections.rnn_bootstrap.char_rnn.plugins.plugin_utils.ec2_distros import (
    DISTRO_TAG,
    FLEET_TAG,
    distro_family,
    group_safe,
    login_user,
)

# AWSInventoryBase.parse() reports a missing boto3 through require_aws_sdk().
with contextlib.suppress(ImportError):
    import boto3


def ssh_args(known_hosts: str, instance_id: str) -> str:
    """SSH options that check the host's key against ``known_hosts`` under its instance ID, and refuse any other."""
    # the path in double quotes, which ssh strips: a space in it would otherwise start a second file
    options = (f'UserKnownHostsFile="{known_hosts}"', "StrictHostKeyChecking=yes", f"HostKeyAlias={instance_id}")
    return " ".join(shlex.quote(f"-o{option}") for option in options)


class InventoryModule(AwsEc2InventoryModule):
    NAME = "rnn_bootstrap.char_rnn.ec2"
    # AWSInventoryBase.verify_file() matches the file name against this; aws_ec2 insists on "aws_ec2.yml".
    INVENTORY_FILE_SUFFIXES = ("ec2.yml", "ec2.yaml")

    def __init__(self) -> None:
        super().__init__()
        self._fleet_regions: list[str] = []

    @property
    def route53_enabled(self) -> bool:
        # aws_ec2 reads this from an option we do not offer.
        return False

    def _boto3_regions(self, service: str) -> list[str]:
        # Searching every region is slow and needs ec2:DescribeRegions; use the configured one when there is one.
        return self._fleet_regions or super()._boto3_regions(service)

    def _resolve_regions(self) -> list[str]:
        regions = list(self.get_option("regions") or [])
        if not regions and self.get_option("region"):
            regions = [self.get_option("region")]
        if not regions:
            session_region = boto3.session.Session(profile_name=self.get_option("profile")).region_name
            regions = [session_region] if session_region else []
        return regions

    def _instance_filters(self) -> dict:
        filters = dict(self.get_option("filters") or {})
        filters.setdefault("instance-state-name", ["running"])
        fleet = self.get_option("fleet")
        if fleet:
            filters[f"tag:{FLEET_TAG}"] = [fleet]
        else:
            filters["tag-key"] = [FLEET_TAG]
        return filters

    def _address(self, host_vars: dict) -> str | None:
        public = host_vars.get("public_ip_address")
        private = host_vars.get("private_ip_address")
        if self.get_option("address") == "private":
            return private
        return public or private

    def _add_fleet_host(self, name: str, host_vars: dict) -> None:
        tags = host_vars.get("tags") or {}
        fleet = tags.get(FLEET_TAG, "")
        distro = tags.get(DISTRO_TAG, "")
        extra: dict[str, str] = {"rnn_bootstrap_fleet": fleet, "rnn_bootstrap_distro": distro}

        self.inventory.add_host(name)
        for group in self._groups_for(fleet, distro):
            self.inventory.add_group(group)
            self.inventory.add_child(group, name)

        address = self._address(host_vars)
        if address:
            extra["ansible_host"] = address
        known_hosts = self.get_option("known_hosts")
        instance_id = host_vars.get("instance_id")
        if known_hosts and instance_id:
            extra["ansible_ssh_common_args"] = ssh_args(os.path.expanduser(known_hosts), instance_id)
        user = login_user(distro)
        if user:
            extra["ansible_user"] = user
        else:
            self.display.warning(f"{name}: unknown distro tag {distro!r}; ansible_user left unset")

        all_vars = {**host_vars, **extra}
        for key, value in all_vars.items():
            self.inventory.set_variable(name, key, value)

        # Constructed features last, so that compose can override ansible_user/ansible_host.
        strict = self.get_option("strict")
        self._set_composite_vars(self.get_option("compose"), all_vars, name, strict=strict)
        self._add_host_to_composed_groups(self.get_option("groups"), all_vars, name, strict=strict)
        self._add_host_to_keyed_groups(self.get_option("keyed_groups"), all_vars, name, strict=strict)

    @staticmethod
    def _groups_for(fleet: str, distro: str) -> list[str]:
        groups = []
        if fleet:
            groups.append(f"fleet_{group_safe(fleet)}")
        if distro:
            groups.append(f"distro_{group_safe(distro)}")
        family = distro_family(distro)
        if family:
            groups.append(f"family_{family}")
        return groups

    def parse(self, inventory, loader, path, cache=True):
        # Skip aws_ec2's parse(): it reads options this plugin does not offer. Its base class reads our config.
        AWSInventoryBase.parse(self, inventory, loader, path, cache=cache)

        hostnames = self.get_option("hostnames")
        if not all(isinstance(element, (dict, str)) for element in hostnames):
            raise AnsibleParserError("hostnames should be a list of dict and str.")
        self._fleet_regions = self._resolve_regions()

        result_was_cached, results = self.get_cached_result(path, cache)
        if not result_was_cached:
            results = self._query(
                self._fleet_regions,
                [self._instance_filters()],
                [],
                self.get_option("strict_permissions"),
                False,
            )

        for name, host_vars in self.iter_entry(results["aws_ec2"], hostnames):
            self._add_fleet_host(name, host_vars)

        self.update_cached_result(path, cache, results)
