"""Run moto's server on 127.0.0.1 with fake official AMIs and SSM public parameters.

Usage: python moto_server.py PORT SEED.json

Real AWS refuses PutParameter under /aws/, and moto mirrors that, so the public parameters the
ec2_fleet role reads are written straight into moto's in-process backend before serving. AMIs come
from MOTO_AMIS_PATH (set by the caller), which moto reads at import time.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from datetime import UTC, datetime

from moto.core import DEFAULT_ACCOUNT_ID
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


def main() -> None:
    port, seed_path = int(sys.argv[1]), sys.argv[2]
    with open(seed_path, encoding="utf-8") as handle:
        seed = json.load(handle)
    seed_ssm(seed["region"], seed["ssm"])
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
