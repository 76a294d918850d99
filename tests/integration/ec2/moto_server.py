"""Run moto's server on 127.0.0.1 with fake official AMIs and SSM public parameters.

Usage: python moto_server.py PORT SEED.json

Real AWS refuses PutParameter under /aws/, and moto mirrors that, so the public parameters the
ec2_fleet role reads are written straight into moto's in-process backend before serving. AMIs come
from MOTO_AMIS_PATH (set by the caller), which moto reads at import time.

moto's GetConsoleOutput returns one fixed boot log without SSH host keys. Here it returns what an
instance's console shows instead: at the first call a boot log without keys yet (the instance is
still booting), then cloud-init's output with the keys block (an ed25519 key derived from the
instance ID, see host_key()), unless the file ``<console_dir>/<instance-id>.txt`` of the seed's
``console_dir`` exists: then that text (a test can show other keys for an instance).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import sys
import threading
from datetime import UTC, datetime

from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.responses import ActionResult
from moto.core.utils import utcnow
from moto.ec2.responses.general import General
from moto.ec2.utils import Base64EncodedString
from moto.server import ThreadedMotoServer
from moto.ssm.models import Parameter, ssm_backends


def seed_ssm(region: str, parameters: dict[str, str]) -> None:
    store = ssm_backends[DEFAULT_ACCOUNT_ID][region]._parameters
    # Without this, moto would append its own Amazon Linux parameters on first read and they would win.
    store.latest_amis_loaded = True
    now = datetime.now(UTC).timestamp()
    for name, value in parameters.items():
        store[name].append(
            Parameter(
                account_id=DEFAULT_ACCOUNT_ID,
                name=name,
                value=value,
                parameter_type="String",
                description=None,
                allowed_pattern=None,
                keyid=None,
                last_modified_date=now,
                version=1,
                data_type="aws:ec2:image",
            )
        )


def host_key(instance_id: str) -> tuple[str, str]:
    """The ed25519 host key the fake console shows for an instance: a well-formed key from its ID."""
    blob = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + hashlib.sha256(instance_id.encode()).digest()
    return "ssh-ed25519", base64.b64encode(blob).decode()


BOOTING = "[    0.000000] Linux version 6.1.0-28-cloud-amd64 (debian-kernel@lists.debian.org)\n"


def cloud_init_console(instance_id: str) -> str:
    key_type, blob = host_key(instance_id)
    return (
        BOOTING
        + "[   11.402275] cloud-init[817]: Cloud-init v. 24.4 running 'modules:config'. Up 11.31 seconds.\r\n"
        + "<14>Jan  7 10:12:46 cloud-init: -----BEGIN SSH HOST KEY FINGERPRINTS-----\r\n"
        + "<14>Jan  7 10:12:46 cloud-init: -----END SSH HOST KEY FINGERPRINTS-----\r\n"
        + "-----BEGIN SSH HOST KEY KEYS-----\r\n"
        + f"{key_type} {blob} root@{instance_id}\r\n"
        + "-----END SSH HOST KEY KEYS-----\r\n"
    )


def fake_console(console_dir: str):
    calls: dict[str, int] = {}

    def get_console_output(self: General) -> ActionResult:
        instance = self.ec2_backend.get_instance(self._get_param("InstanceId"))
        calls[instance.id] = calls.get(instance.id, 0) + 1
        override = os.path.join(console_dir, f"{instance.id}.txt") if console_dir else ""
        if override and os.path.exists(override):
            with open(override, encoding="utf-8") as handle:
                text = handle.read()
        else:
            text = BOOTING if calls[instance.id] == 1 else cloud_init_console(instance.id)
        return ActionResult(
            {"InstanceId": instance.id, "Timestamp": utcnow(), "Output": Base64EncodedString.from_raw_string(text)}
        )

    return get_console_output


def main() -> None:
    port, seed_path = int(sys.argv[1]), sys.argv[2]
    with open(seed_path, encoding="utf-8") as handle:
        seed = json.load(handle)
    seed_ssm(seed["region"], seed["ssm"])
    General.get_console_output = fake_console(seed.get("console_dir", ""))
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print("ready", flush=True)
    stop.wait()
    server.stop()


if __name__ == "__main__":
    main()
