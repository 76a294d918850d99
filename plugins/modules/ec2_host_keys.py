#!/usr/bin/python
# Copyright: rnn_bootstrap maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ec2_host_keys
short_description: Record EC2 instances' SSH host keys from their console output in a known_hosts file
version_added: "0.1.0"
description:
  - Reads each instance's console output (EC2 C(GetConsoleOutput)), where cloud-init prints the public SSH host
    keys between C(-----BEGIN SSH HOST KEY KEYS-----) and C(-----END SSH HOST KEY KEYS-----), and waits until
    they are there (EC2 publishes the console output some minutes after boot).
  - Writes them to O(known_hosts) under the instance ID as host name, for SSH's C(HostKeyAlias); the inventory
    plugin P(rnn_bootstrap.char_rnn.ec2#inventory) points SSH at the same file with C(StrictHostKeyChecking=yes).
    Keys tied to the instance ID stay right when an address changes or is reused by another instance.
  - An instance already recorded with other keys is refused, with the fingerprints recorded and now shown,
    and nothing is written. An instance's host keys change only when it is rebuilt, or when something
    impersonates it.
  - O(state=absent) removes the instances' lines (for example after they were terminated).
author:
  - rnn_bootstrap maintainers (@rnn-bootstrap)
options:
  instance_ids:
    description: The instances, by ID.
    type: list
    elements: str
    required: true
  known_hosts:
    description:
      - The known_hosts file to update; created (mode 0600, its folder 0700) when missing.
      - Lines of other hosts, comments, hashed names and markers are kept as they are.
    type: path
    required: true
  state:
    description: V(present) records the keys; V(absent) removes the instances' lines.
    type: str
    choices: [present, absent]
    default: present
  comments:
    description: A comment per instance ID written after its keys, for example its address.
    type: dict
    default: {}
  timeout:
    description:
      - Seconds to wait for the keys to appear in the console output of every instance.
      - The module fails naming the instances that still show none.
    type: int
    default: 600
  delay:
    description: Seconds between two reads of an instance's console output.
    type: int
    default: 10
extends_documentation_fragment:
  - rnn_bootstrap.char_rnn.attributes
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
notes:
  - Needs C(ec2:GetConsoleOutput) on the instances.
  - The keys are what the instance printed at its first boot; an instance whose image does not run cloud-init's
    C(keys_to_console) (or that has it turned off) never shows any, and the module times out.
"""

EXAMPLES = r"""
- name: Record the fleet's host keys
  rnn_bootstrap.char_rnn.ec2_host_keys:
    instance_ids: "{{ launched.instances | map(attribute='instance_id') }}"
    known_hosts: ~/.ssh/known_hosts.rnn_bootstrap
    region: eu-west-1

# Then: ssh -o UserKnownHostsFile=~/.ssh/known_hosts.rnn_bootstrap -o StrictHostKeyChecking=yes \
#           -o HostKeyAlias=i-0123456789abcdef0 admin@203.0.113.10
"""

RETURN = r"""
keys:
  description:
    - Per instance ID, the host keys found (C(type), C(key) (base64) and C(fingerprint)).
    - Empty for O(state=absent).
  returned: always
  type: dict
  sample:
    i-0123456789abcdef0:
      - {type: ssh-ed25519, key: AAAAC3NzaC1lZDI1NTE5AAAAIC..., fingerprint: "SHA256:5Yl..."}
added:
  description: The instance IDs whose keys were added (or, for O(state=absent), removed).
  returned: always
  type: list
  elements: str
known_hosts:
  description: The file, with C(~) expanded.
  returned: always
  type: str
"""

import contextlib
import os
import tempfile
import time

from ansible_collections.amazon.aws.plugins.module_utils.botocore import is_boto3_error_code
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry
from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils import ssh_host_keys

with contextlib.suppress(ImportError):  # AnsibleAWSModule reports a missing botocore
    import botocore


def read_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return ""


def write_file(path: str, text: str) -> None:
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        os.makedirs(folder, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".known_hosts.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def console_keys(client, instance_id: str, module) -> list[tuple[str, str]] | None:
    try:
        response = client.get_console_output(InstanceId=instance_id, aws_retry=True)
    except is_boto3_error_code("InvalidInstanceID.NotFound"):
        module.fail_json(msg=f"instance {instance_id} does not exist")
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:  # pylint: disable=duplicate-except
        module.fail_json_aws(exc, msg=f"cannot read the console output of {instance_id}")
    return ssh_host_keys.parse_console(ssh_host_keys.console_text(response.get("Output")))


def main() -> None:
    module = AnsibleAWSModule(
        argument_spec={
            "instance_ids": {"type": "list", "elements": "str", "required": True},
            "known_hosts": {"type": "path", "required": True},
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
            "comments": {"type": "dict", "default": {}},
            "timeout": {"type": "int", "default": 600},
            "delay": {"type": "int", "default": 10},
        },
        supports_check_mode=True,
    )
    path = module.params["known_hosts"]  # type path: ~ already expanded
    ids = list(dict.fromkeys(module.params["instance_ids"]))
    text = read_file(path)
    result = {"changed": False, "keys": {}, "added": [], "known_hosts": path}

    if module.params["state"] == "absent":
        known = ssh_host_keys.parse_known_hosts(text)
        result["added"] = [i for i in ids if i in known]
        if result["added"]:
            result["changed"] = True
            if not module.check_mode:
                write_file(path, ssh_host_keys.without_hosts(text, set(result["added"])))
        module.exit_json(**result)

    client = module.client("ec2", retry_decorator=AWSRetry.jittered_backoff())
    found: dict[str, list[tuple[str, str]]] = {}
    deadline = time.monotonic() + max(0, module.params["timeout"])
    waiting = list(ids)
    while True:
        for instance_id in list(waiting):
            keys = console_keys(client, instance_id, module)
            if keys:
                found[instance_id] = keys
                waiting.remove(instance_id)
        if not waiting or time.monotonic() >= deadline:
            break
        time.sleep(max(1, module.params["delay"]))
    result["keys"] = {
        i: [{"type": t, "key": b, "fingerprint": ssh_host_keys.fingerprint(b)} for t, b in keys]
        for i, keys in found.items()
    }
    if waiting:
        module.fail_json(
            msg=(
                f"no SSH host keys in the console output of {', '.join(waiting)} after {module.params['timeout']} s: "
                "cloud-init prints them at the first boot and EC2 publishes the console output a few minutes later; "
                "raise ec2_fleet_host_keys_timeout, or check that the image runs cloud-init's keys_to_console"
            ),
            **result,
        )
    clashes = ssh_host_keys.conflicts(text, found)
    if clashes:
        detail = "; ".join(
            f"{i}: recorded {', '.join(c['recorded'])}, now {', '.join(c['now'])}" for i, c in sorted(clashes.items())
        )
        module.fail_json(
            msg=(
                f"SSH host keys changed for {', '.join(sorted(clashes))} since they were recorded in {path} "
                f"({detail}). "
                "Refusing to trust them: if the instance was rebuilt on purpose, remove its lines "
                f"(ssh-keygen -R <instance-id> -f {path}) and run again"
            ),
            conflicts=clashes,
            **result,
        )
    new_text = ssh_host_keys.with_hosts(text, found, module.params["comments"])
    known = ssh_host_keys.parse_known_hosts(text)
    result["added"] = [i for i in ids if i not in known]
    if new_text != text:
        result["changed"] = True
        if not module.check_mode:
            write_file(path, new_text)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
