"""Provision, list and tear down a fleet against moto's server, through the real playbooks and plugin.

The tests run in file order and share one moto server: provision -> re-provision -> inventory -> teardown.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import stat
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils.ssh_host_keys import fingerprint
from ec2_helpers import (
    EXPECTED_AMI,
    FLEET,
    KEY_NAME,
    OTHER_FLEET,
    REGION,
    REPO,
    ROOT_DEVICE,
    SSH_CIDR,
    fleet_instances,
)
from moto_server import host_key

SPEC = [{"distro": "ubuntu-24.04", "count": 2}, {"distro": "debian-12", "count": 1}]
PROVISION_VARS = {
    "ec2_fleet_name": FLEET,
    "ec2_fleet_owner": "ci-owner",
    "ec2_fleet_distros": SPEC,
    "ec2_fleet_key_name": KEY_NAME,
    "ec2_fleet_ssh_cidr": SSH_CIDR,
    # Nothing answers SSH in moto.
    "ec2_fleet_wait_for_ssh": False,
}
USERS = {"ubuntu-24.04": "ubuntu", "debian-12": "admin", "rhel-9": "ec2-user"}


def _tag(instance: dict, key: str) -> str | None:
    return next((t["Value"] for t in instance.get("Tags", []) if t["Key"] == key), None)


def _unwrap(value):
    """ansible-inventory marks values from inventory plugins as unsafe in its JSON; strip the markers."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {k: _unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap(v) for v in value]
    return value


def _inventory(cli, source: str, env: dict[str, str] | None = None) -> dict:
    run = cli("ansible-inventory", "-i", source, "--list", env=env)
    assert run.rc == 0, run.out
    return _unwrap(json.loads(run.stdout))


def _group_hosts(inventory: dict, group: str) -> set[str]:
    return set(inventory.get(group, {}).get("hosts", []))


def _all_hosts(inventory: dict) -> set[str]:
    return set(inventory["_meta"]["hostvars"])


@pytest.fixture(scope="module")
def provisioned(bystanders, playbook, ec2) -> dict[str, dict]:
    run = playbook("provision", **PROVISION_VARS)
    assert run.rc == 0, run.out
    assert run.recap()["changed"] >= 2, run.out  # security group + instances
    return {i["InstanceId"]: i for i in fleet_instances(ec2, FLEET)}


@pytest.fixture
def fleet_env(moto_endpoint: str) -> dict[str, str]:
    """What a user of the root ec2.yml sets: the fleet, and (for moto only) the endpoint boto3 honours."""
    return {"RNN_BOOTSTRAP_FLEET": FLEET, "AWS_ENDPOINT_URL": moto_endpoint}


def test_provision_launches_the_spec(provisioned, ec2):
    assert Counter(_tag(i, "rnn_bootstrap:distro") for i in provisioned.values()) == {"ubuntu-24.04": 2, "debian-12": 1}
    for instance in provisioned.values():
        distro = _tag(instance, "rnn_bootstrap:distro")
        assert instance["State"]["Name"] == "running"
        assert instance["ImageId"] == EXPECTED_AMI[distro]  # the SSM parameter's AMI, not the older image
        assert instance["InstanceType"] == "c7i.xlarge"
        assert instance["KeyName"] == KEY_NAME
        assert instance["MetadataOptions"]["HttpTokens"] == "required"
        assert _tag(instance, "rnn_bootstrap:owner") == "ci-owner"
        (root,) = instance["BlockDeviceMappings"]
        assert root["DeviceName"] == ROOT_DEVICE[instance["ImageId"]]
        (volume,) = ec2.describe_volumes(VolumeIds=[root["Ebs"]["VolumeId"]])["Volumes"]
        assert volume["Encrypted"] is True
        assert volume["Size"] == 30


def test_security_group_allows_ssh_from_the_given_cidr_only(provisioned, ec2):
    group_ids = {g["GroupId"] for i in provisioned.values() for g in i["SecurityGroups"]}
    assert len(group_ids) == 1
    (group,) = ec2.describe_security_groups(GroupIds=list(group_ids))["SecurityGroups"]
    assert group["GroupName"] == f"{FLEET}-ssh"
    assert {t["Key"]: t["Value"] for t in group["Tags"]}["rnn_bootstrap:fleet"] == FLEET
    rules = [
        (p["IpProtocol"], p.get("FromPort"), p.get("ToPort"), [r["CidrIp"] for r in p.get("IpRanges", [])])
        for p in group["IpPermissions"]
    ]
    assert rules == [("tcp", 22, 22, [SSH_CIDR])]


def test_second_provision_changes_nothing(provisioned, playbook, ec2):
    run = playbook("provision", **PROVISION_VARS)
    assert run.rc == 0, run.out
    assert run.recap()["changed"] == 0, run.out
    assert {i["InstanceId"] for i in fleet_instances(ec2, FLEET)} == set(provisioned)


def _known_hosts_lines(known_hosts: Path) -> dict[str, list[str]]:
    lines: dict[str, list[str]] = {}
    for line in known_hosts.read_text().splitlines():
        host, key_type, blob, *comment = line.split()
        lines.setdefault(host, []).append(f"{key_type} {blob} {' '.join(comment)}".strip())
    return lines


def test_provision_records_every_host_key_from_the_console(provisioned, bystanders, known_hosts: Path):
    """moto's console shows a boot log without keys at first, then cloud-init's block: provision waited for it."""
    assert stat.S_IMODE(known_hosts.stat().st_mode) == 0o600
    recorded = _known_hosts_lines(known_hosts)
    assert set(recorded) == {*provisioned, bystanders["other"]}
    for instance_id, instance in provisioned.items():
        assert recorded[instance_id] == [" ".join([*host_key(instance_id), instance["PublicIpAddress"]])]


def test_changed_host_keys_are_refused(provisioned, playbook, known_hosts: Path, console_dir: Path):
    victim = sorted(provisioned)[0]
    before = known_hosts.read_text()
    other = (REPO / "tests/unit/plugins/module_utils/fixtures/console/debian-12.txt").read_text()
    (console_dir / f"{victim}.txt").write_text(other)  # the console now shows other keys for this instance
    try:
        run = playbook("provision", **PROVISION_VARS)
    finally:
        (console_dir / f"{victim}.txt").unlink()
    assert run.rc != 0
    out = " ".join(run.out.split())
    assert f"SSH host keys changed for {victim} since they were recorded in {known_hosts}" in out, run.out
    assert f"recorded ssh-ed25519 {fingerprint(host_key(victim)[1])}, now ecdsa-sha2-nistp256 SHA256:" in out
    assert f"ssh-keygen -R <instance-id> -f {known_hosts}" in out
    assert known_hosts.read_text() == before  # nothing written, nothing trusted
    again = playbook("provision", **PROVISION_VARS)
    assert again.rc == 0 and again.recap()["changed"] == 0, again.out


def test_provision_waits_for_the_keys_and_names_the_instances_without_any(
    provisioned, playbook, known_hosts: Path, console_dir: Path
):
    victim = sorted(provisioned)[-1]
    before = known_hosts.read_text()
    known_hosts.write_text("".join(line + "\n" for line in before.splitlines() if not line.startswith(victim)))
    (console_dir / f"{victim}.txt").write_text("[    0.000000] Linux version 6.1.0-28-cloud-amd64\n")  # still booting
    try:
        run = playbook("provision", **PROVISION_VARS, ec2_fleet_host_keys_timeout=3)
    finally:
        (console_dir / f"{victim}.txt").unlink()
    assert run.rc != 0
    assert f"no SSH host keys in the console output of {victim} after 3 s" in " ".join(run.out.split()), run.out
    assert victim not in known_hosts.read_text()
    again = playbook("provision", **PROVISION_VARS)
    assert again.rc == 0 and again.recap()["changed"] == 1, again.out  # the instance's keys, recorded again
    assert sorted(known_hosts.read_text().splitlines()) == sorted(before.splitlines())


def test_owner_and_name_lookup_picks_the_newest_official_image(bystanders, ec2):
    (other,) = fleet_instances(ec2, OTHER_FLEET)
    # Not the older 9.4, not the newer beta, not the newer look-alike from another account.
    assert other["ImageId"] == EXPECTED_AMI["rhel-9"]


def test_root_ec2_yml_lists_exactly_the_fleet(provisioned, cli, fleet_env):
    inventory = _inventory(cli, "ec2.yml", env=fleet_env)
    hostvars = inventory["_meta"]["hostvars"]
    assert _all_hosts(inventory) == set(provisioned)
    assert _group_hosts(inventory, f"fleet_{FLEET}") == set(provisioned)
    by_distro = {d: {h for h, i in provisioned.items() if _tag(i, "rnn_bootstrap:distro") == d} for d in USERS}
    assert _group_hosts(inventory, "distro_ubuntu_24_04") == by_distro["ubuntu-24.04"]
    assert _group_hosts(inventory, "distro_debian_12") == by_distro["debian-12"]
    assert _group_hosts(inventory, "family_debian") == by_distro["debian-12"]
    for host, instance in provisioned.items():
        assert hostvars[host]["ansible_user"] == USERS[_tag(instance, "rnn_bootstrap:distro")]
        assert instance["PublicIpAddress"]
        assert hostvars[host]["ansible_host"] == instance["PublicIpAddress"]


def test_inventory_makes_ssh_check_the_recorded_host_key(provisioned, cli, fleet_env, known_hosts: Path):
    """What ssh makes of the inventory's arguments (ssh -G), and that it finds the key under the alias."""
    hostvars = _inventory(cli, "ec2.yml", env=fleet_env)["_meta"]["hostvars"]
    for host, instance in provisioned.items():
        args = hostvars[host]["ansible_ssh_common_args"]
        assert args == (f"'-oUserKnownHostsFile=\"{known_hosts}\"' -oStrictHostKeyChecking=yes -oHostKeyAlias={host}")
        if not shutil.which("ssh"):
            continue
        config = subprocess.run(
            ["ssh", "-G", *shlex.split(args), instance["PublicIpAddress"]], capture_output=True, text=True, check=True
        ).stdout.splitlines()
        assert f"userknownhostsfile {known_hosts}" in config
        assert "stricthostkeychecking true" in config
        assert f"hostkeyalias {host}" in config
        found = subprocess.run(
            ["ssh-keygen", "-F", host, "-f", str(known_hosts)], capture_output=True, text=True, check=False
        )
        assert found.returncode == 0 and host_key(host)[1] in found.stdout


def test_private_addresses_and_explicit_endpoint(provisioned, cli, moto_endpoint, tmp_path: Path):
    config = tmp_path / "lab.ec2.yml"
    config.write_text(
        "plugin: rnn_bootstrap.char_rnn.ec2\n"
        f"fleet: {FLEET}\n"
        f"regions: [{REGION}]\n"
        "address: private\n"
        f"endpoint_url: {moto_endpoint}\n"
    )
    inventory = _inventory(cli, str(config))
    hostvars = inventory["_meta"]["hostvars"]
    assert _all_hosts(inventory) == set(provisioned)
    for host, instance in provisioned.items():
        assert hostvars[host]["ansible_host"] == instance["PrivateIpAddress"] != instance["PublicIpAddress"]


def test_empty_fleet_lists_every_fleet_but_nothing_untagged(provisioned, bystanders, cli, fleet_env):
    inventory = _inventory(cli, "ec2.yml", env={**fleet_env, "RNN_BOOTSTRAP_FLEET": ""})
    assert _all_hosts(inventory) == {*provisioned, bystanders["other"]}
    assert _group_hosts(inventory, "fleet_rnnci_other") == {bystanders["other"]}
    assert inventory["_meta"]["hostvars"][bystanders["other"]]["ansible_user"] == "ec2-user"


def test_site_yml_list_hosts_lists_the_fleet(provisioned, cli, fleet_env, site_collections_env):
    run = cli(
        "ansible-playbook", "site.yml", "-i", "ec2.yml", "--list-hosts", env={**fleet_env, **site_collections_env}
    )
    assert run.rc == 0, run.out
    # Every play of site.yml (Python bootstrap, provisioning) targets exactly the fleet.
    plays = re.findall(r"hosts \((\d+)\):\n((?:[ \t]+\S+(?:\n|$))+)", run.out)
    assert len(plays) == 2, run.out
    for count, hosts in plays:
        assert int(count) == len(provisioned), run.out
        assert set(hosts.split()) == set(provisioned), run.out


def test_teardown_without_confirmation_deletes_nothing(provisioned, playbook, ec2):
    # stdin is not a terminal here, so the prompt gets an empty answer: that must not count as yes.
    run = playbook("teardown", ec2_fleet_name=FLEET)
    assert run.rc != 0
    assert "Not confirmed" in run.out
    assert {i["InstanceId"] for i in fleet_instances(ec2, FLEET)} == set(provisioned)


def test_teardown_removes_the_fleet_and_nothing_else(
    provisioned, bystanders, playbook, ec2, cli, fleet_env, known_hosts: Path
):
    run = playbook("teardown", ec2_fleet_name=FLEET, ec2_fleet_teardown_confirm=False)
    assert run.rc == 0, run.out
    assert fleet_instances(ec2, FLEET) == []
    assert not ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [f"{FLEET}-ssh"]}])[
        "SecurityGroups"
    ]
    survivors = ec2.describe_instances(InstanceIds=[bystanders["untagged"], bystanders["other"]])["Reservations"]
    assert {i["InstanceId"]: i["State"]["Name"] for r in survivors for i in r["Instances"]} == {
        bystanders["untagged"]: "running",
        bystanders["other"]: "running",
    }
    assert ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [f"{OTHER_FLEET}-ssh"]}])[
        "SecurityGroups"
    ]
    assert _all_hosts(_inventory(cli, "ec2.yml", env=fleet_env)) == set()
    assert set(_known_hosts_lines(known_hosts)) == {bystanders["other"]}  # the fleet's lines went with it


def test_count_zero_scales_a_distro_down_and_keeps_the_rest(bystanders, playbook, ec2):
    # Runs after teardown so that its own fleet does not disturb the listings above.
    spec = {**PROVISION_VARS, "ec2_fleet_name": "rnnci-scale"}
    up = playbook(
        "provision",
        **{**spec, "ec2_fleet_distros": [{"distro": "ubuntu-24.04", "count": 1}, {"distro": "debian-12", "count": 1}]},
    )
    assert up.rc == 0, up.out
    before = {_tag(i, "rnn_bootstrap:distro"): i["InstanceId"] for i in fleet_instances(ec2, "rnnci-scale")}
    down = playbook(
        "provision",
        **{**spec, "ec2_fleet_distros": [{"distro": "ubuntu-24.04", "count": 1}, {"distro": "debian-12", "count": 0}]},
    )
    assert down.rc == 0, down.out
    assert down.recap()["changed"] == 1, down.out
    after = {_tag(i, "rnn_bootstrap:distro"): i["InstanceId"] for i in fleet_instances(ec2, "rnnci-scale")}
    assert after == {"ubuntu-24.04": before["ubuntu-24.04"]}
    assert {i["InstanceId"] for i in fleet_instances(ec2, OTHER_FLEET)} == {bystanders["other"]}


def test_role_knows_every_distro_the_plugin_knows():
    import yaml
    from ansible_collections.rnn_bootstrap.char_rnn.plugins.plugin_utils.ec2_distros import DISTROS, login_user

    role = REPO / "roles" / "ec2_fleet"
    images = yaml.safe_load((role / "defaults" / "main.yml").read_text())["ec2_fleet_images"]
    specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    choices = specs["main"]["options"]["ec2_fleet_distros"]["options"]["distro"]["choices"]
    assert set(images) == set(DISTROS) == set(choices)
    assert all(login_user(d) for d in DISTROS)
    assert [login_user(d) for d in ("debian-13", "ubuntu-22.04", "amazonlinux-2023", "rocky-9", "sles-16")] == [
        "admin",
        "ubuntu",
        "ec2-user",
        "rocky",
        "ec2-user",
    ]
    assert login_user("windows-2022") is None
