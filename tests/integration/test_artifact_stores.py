"""The torch7 role's artifact stores, driven for real: a controller directory, S3 (moto's server
on 127.0.0.1) and a read-only HTTP mirror (a server on 127.0.0.1).

Two local "hosts" run artifact_store/transfer.yml: `builder` publishes an artifact from its host
directory, `installer` looks the key up and brings the artifact over as a host of the same key
would; a second run changes nothing. The artifact is a small tarball made here, not Torch7: the
election and the install (torch_install with key and sha256 checks) run in the Molecule fleet.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import pytest
from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils import torch_artifact as ta

REPO = Path(__file__).resolve().parents[2]
PLAYBOOK = Path(__file__).with_name("artifact_store") / "transfer.yml"
BIN = Path(sys.executable).parent
BUCKET = "torch7-artifacts"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def artifact(tmp_path: Path, artifact_key) -> dict:
    """A key, and its tarball and manifest in the builder's host directory."""
    key = artifact_key()
    name = ta.artifact_name(key)
    content = tmp_path / "prefix"
    (content / "bin").mkdir(parents=True)
    (content / "bin" / "th").write_text("#!/bin/sh\n" + "echo stand-in\n" * 2000)
    host_dir = tmp_path / "builder-host"
    host_dir.mkdir()
    tarball = host_dir / f"{name}.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(content, arcname=".")
    manifest = ta.make_manifest(key, str(tarball), {"prefix": "/opt/torch/install"}, "builder", "now")
    ta.write_json(str(host_dir / f"{name}.json"), manifest)
    return {"name": name, "key": key, "key_id": ta.key_id(key), "manifest": manifest}


def run(tmp_path: Path, artifact: dict, kind: str, store: str, expect_empty: bool, extra=None, env=None) -> dict:
    inventory = tmp_path / "hosts.ini"
    inventory.write_text(
        f"builder torch7_artifact_host_dir={tmp_path / 'builder-host'}\n"
        f"installer torch7_artifact_host_dir={tmp_path / 'installer-host'}\n"
        f"[all:vars]\nansible_connection=local\nansible_python_interpreter={sys.executable}\n"
    )
    report = tmp_path / "report.json"
    variables = {
        "artifact_key": {k: artifact[k] for k in ("name", "key", "key_id")},
        "store_kind": kind,
        "torch7_artifact_store": store,
        "torch7_artifact_staging": str(tmp_path / "staging"),
        "expect_empty": expect_empty,
        "report": str(report),
        **(extra or {}),
    }
    (tmp_path / "vars.json").write_text(json.dumps(variables))
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    proc = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(inventory), "-e", f"@{tmp_path / 'vars.json'}", str(PLAYBOOK)],
        cwd=REPO,
        env={
            **os.environ,
            "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
            "HOME": str(home),
            "ANSIBLE_NOCOLOR": "1",
            **(env or {}),
        },
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    recap = dict(re.findall(r"^(builder|installer)\s+:.*?changed=(\d+)", proc.stdout, re.M))
    return {"report": json.loads(report.read_text()), "changed": {h: int(n) for h, n in recap.items()}}


def installed(tmp_path: Path, artifact: dict) -> str:
    name = artifact["name"]
    host_dir = tmp_path / "installer-host"
    manifest = json.loads((host_dir / f"{name}.json").read_text())
    assert manifest == artifact["manifest"]
    return hashlib.sha256((host_dir / f"{name}.tar.gz").read_bytes()).hexdigest()


def test_controller_directory_store(tmp_path, artifact):
    store = tmp_path / "store"
    first = run(tmp_path, artifact, "dir", str(store), expect_empty=True)
    assert first["report"]["mode"] == "wait"  # looked up before the builder published
    assert installed(tmp_path, artifact) == artifact["manifest"]["sha256"]
    assert sorted(p.name for p in store.iterdir()) == [f"{artifact['name']}.json", f"{artifact['name']}.tar.gz"]
    again = run(tmp_path, artifact, "dir", str(store), expect_empty=False)
    assert again["report"]["mode"] == "install" and artifact["name"] in again["report"]["found"]
    assert again["changed"] == {"builder": 0, "installer": 0}, again


@pytest.fixture
def http_store(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}/mirror/"
    server.shutdown()


def test_read_only_http_store(tmp_path, artifact, http_store):
    served, url = http_store
    (served / "mirror").mkdir()
    # missing from the mirror: the builder's artifact reaches the other host through the controller
    first = run(tmp_path, artifact, "http", url, expect_empty=True)
    assert first["report"]["mode"] == "wait"
    assert installed(tmp_path, artifact) == artifact["manifest"]["sha256"]
    assert not list((served / "mirror").iterdir())  # read-only: nothing uploaded
    # once the team publishes it, hosts download it from the mirror, checksum verified
    for suffix in (".tar.gz", ".json"):
        shutil.copy(tmp_path / "staging" / f"{artifact['name']}{suffix}", served / "mirror")
    shutil.rmtree(tmp_path / "installer-host")
    second = run(tmp_path, artifact, "http", url, expect_empty=False)
    assert second["report"]["mode"] == "install"
    assert installed(tmp_path, artifact) == artifact["manifest"]["sha256"]
    third = run(tmp_path, artifact, "http", url, expect_empty=False)
    assert third["changed"]["installer"] == 0, third


@pytest.fixture
def s3_endpoint():
    moto_server = pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip
    client.create_bucket(Bucket=BUCKET)
    yield endpoint, env, client
    server.stop()


def test_s3_store(tmp_path, artifact, s3_endpoint):
    endpoint, env, client = s3_endpoint
    store = f"s3://{BUCKET}/fleet/a"
    extra = {"torch7_artifact_s3_endpoint_url": endpoint, "torch7_artifact_s3_region": "us-east-1"}
    first = run(tmp_path, artifact, "s3", store, expect_empty=True, extra=extra, env=env)
    assert first["report"]["mode"] == "wait"
    assert installed(tmp_path, artifact) == artifact["manifest"]["sha256"]
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=BUCKET)["Contents"])
    assert keys == [f"fleet/a/{artifact['name']}.json", f"fleet/a/{artifact['name']}.tar.gz"]
    body = client.get_object(Bucket=BUCKET, Key=f"fleet/a/{artifact['name']}.tar.gz")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == artifact["manifest"]["sha256"]
    shutil.rmtree(tmp_path / "installer-host")
    second = run(tmp_path, artifact, "s3", store, expect_empty=False, extra=extra, env=env)
    assert second["report"]["mode"] == "install"  # found in S3, downloaded through a signed URL
    assert installed(tmp_path, artifact) == artifact["manifest"]["sha256"]
    third = run(tmp_path, artifact, "s3", store, expect_empty=False, extra=extra, env=env)
    assert third["changed"] == {"builder": 0, "installer": 0}, third
