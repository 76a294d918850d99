"""Verify a fleet provisioned by site.yml with a Torch7 artifact store (testinfra, Molecule's verifier).

Per key (Debian 12, Debian 13) exactly one host built Torch7 and the others installed its
artifact with runtime packages only; the store on the controller holds one artifact per key whose
sha256 matches its manifest; every host's Torch7 works. Then a Debian 12 host is offered the
Debian 13 artifact and a corrupt one, and must refuse both and keep working.
With the FIXTURE upstream (default) these are the project's stand-ins, not real Torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest
from verify_helpers import container, host_names, inventory, playbook

PREFIX = "/opt/torch/install"
STORE = Path(os.environ["CHARRNN_ARTIFACT_STORE"])
SCENARIO = Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"])
HOSTS = host_names()


def record_of(host) -> dict:
    return json.loads(host.file(f"{PREFIX}/.rnn_bootstrap-build.json").content_string)


@pytest.fixture(scope="module")
def records() -> dict[str, dict]:
    return {name: record_of(container(name)) for name in HOSTS}


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict]:
    return {path.stem: json.loads(path.read_text()) for path in STORE.glob("torch7-*.json")}


def test_fleet_has_two_keys(records):
    assert len(HOSTS) == 5, HOSTS
    assert len({r["artifact_key_id"] for r in records.values()}) == 2, records


def test_exactly_one_build_per_key(records):
    sources = defaultdict(list)
    for name, record in records.items():
        sources[record["artifact_key_id"]].append((name, record["source"]))
    print("\nbuilds and installs per key:")
    for key_id, hosts in sorted(sources.items()):
        built = [n for n, s in hosts if s == "build"]
        installed = [n for n, s in hosts if s == "artifact"]
        print(f"  key {key_id}: built on {built}, installed on {installed}")
        assert len(built) == 1, hosts
        assert len(installed) == len(hosts) - 1, hosts


def test_store_holds_one_artifact_per_key_with_matching_checksum(records, manifests):
    assert {m["key_id"] for m in manifests.values()} == {r["artifact_key_id"] for r in records.values()}
    assert len(list(STORE.glob("*.tar.gz"))) == len(manifests) == 2
    for name, manifest in manifests.items():
        tarball = STORE / f"{name}.tar.gz"
        assert hashlib.sha256(tarball.read_bytes()).hexdigest() == manifest["sha256"], name
        assert manifest["name"] == name and manifest["tarball"] == tarball.name


def test_installs_record_the_artifact_they_came_from(records, manifests):
    by_key = {m["key_id"]: m for m in manifests.values()}
    for name, record in records.items():
        if record["source"] == "artifact":
            manifest = by_key[record["artifact_key_id"]]
            assert record["artifact_sha256"] == manifest["sha256"], name
            assert record["artifact_name"] == manifest["name"], name
            assert record["built_on"] == manifest["built_on"] != name, name


@pytest.mark.parametrize("tool", ["gcc", "cc", "g++", "cmake", "make"])
def test_hosts_that_installed_have_no_toolchain(host, tool):
    if record_of(host)["source"] != "artifact":
        pytest.skip("this host built Torch7: it has the toolchain")
    assert not host.exists(tool), tool


def test_hosts_that_installed_have_no_dev_packages(host):
    if record_of(host)["source"] != "artifact":
        pytest.skip("this host built Torch7")
    dev = host.run("dpkg-query -W -f '${Package} ${Status}\\n' | awk '/ installed$/ && $1 ~ /-dev(:|$)/ {print $1}'")
    assert dev.rc == 0 and dev.stdout.strip() == "", dev.stdout


def test_th_requires_what_char_rnn_needs(host):
    out = host.check_output(
        "th -e \"require 'torch'; require 'nn'; require 'nngraph'; require 'optim'; require 'lfs'; print('ok')\""
    )
    assert out.strip().endswith("ok"), out


def test_the_training_user_can_train(host):
    """char-rnn's train.lua under the installed (or built) th, as the unprivileged user, writes a checkpoint."""
    # 38 iterations of the FIXTURE corpus, 56 of tinyshakespeare: a checkpoint at iteration 20
    fixture = os.environ.get("CHARRNN_UPSTREAM") == "fixture"
    setting = "FIXTURE_SECONDS_PER_BATCH=0 " if fixture else ""
    epochs = "0.2" if fixture else "0.01"
    run = host.run(
        f"cd /opt/rnn-karpathy && {setting}runuser -u charrnn -- th train.lua -gpuid -1 "
        f"-rnn_size 16 -num_layers 1 -seq_length 20 -batch_size 10 -max_epochs {epochs} -eval_val_every 20 "
        "-savefile verify -checkpoint_dir cv/verify"
    )
    assert run.rc == 0, run.stdout[-1500:] + run.stderr[-1500:]
    assert "saving checkpoint to cv/verify/lm_verify_epoch" in run.stdout
    host.run("rm -rf /opt/rnn-karpathy/cv/verify")


def test_libth_links_the_openmp_openblas(host):
    libth = host.run(f"ls {PREFIX}/lib/libTH.so*").stdout.split()[0]
    lib = host.check_output(f"ldd {libth} | awk '/libopenblas/ {{print $3}}'")
    assert "openblas-openmp" in host.check_output(f"readlink -f {lib}")


def test_wrong_artifacts_are_refused_and_the_host_keeps_working(records, manifests, tmp_path):
    target = next(n for n, r in records.items() if r["source"] == "artifact" and "debian-12" in n)
    other = next(name for name, m in manifests.items() if m["key"]["release"] == "13")
    before = record_of(container(target))
    report = tmp_path / "refusals.json"
    proc = playbook(
        SCENARIO / "refuse.yml", "-e", f"refuse_host={target} store={STORE} other_name={other} report={report}"
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    refusals = json.loads(report.read_text())
    mismatched, corrupt = refusals["mismatched"], refusals["corrupt"]
    print(f"\nmismatched artifact offered to {target}:\n  {mismatched['msg']}")
    print(f"corrupt artifact offered to {target}:\n  {corrupt['msg']}")
    assert mismatched["failed"] and mismatched["failed_step"] == "check artifact key"
    assert "release=12" in mismatched["msg"] and "release=13" in mismatched["msg"]
    assert corrupt["failed"] and corrupt["failed_step"] == "check artifact checksum" and "corrupt" in corrupt["msg"]
    host = container(target)
    assert record_of(host) == before
    test_th_requires_what_char_rnn_needs(host)


def test_a_failed_build_fails_its_key_and_leaves_the_other_key_alone(tmp_path):
    proc = playbook(
        SCENARIO / "failed_build.yml",
        "-e", f"torch7_artifact_store={tmp_path / 'store'} torch7_artifact_staging={tmp_path / 'staging'}",
    )  # fmt: skip
    recap = {
        m[0]: int(m[1])
        for m in re.findall(r"^(\S+)\s+: ok=\d+\s+changed=\d+\s+unreachable=\d+\s+failed=(\d+)", proc.stdout, re.M)
    }
    # a long message may be wrapped
    said = " ".join(proc.stdout.split())
    print(f"\nfailed-build run: {recap}")
    for phrase in ("Torch7 build on", "was to be built by"):
        at = said.find(phrase)
        print("  " + said[at : at + 300] if at >= 0 else f"  (no '{phrase}')")
    debian12 = [h for h in HOSTS if "debian-12" in h]
    assert all(recap.get(h) == 1 for h in debian12), (recap, proc.stdout[-3000:])
    assert recap.get(next(h for h in HOSTS if "debian-13" in h)) == 0, proc.stdout[-3000:]
    builder = sorted(debian12)[0]
    assert f"Torch7 build on {builder} failed" in said, said[-3000:]
    assert said.count(f"was to be built by {builder}, whose build failed") >= len(debian12) - 1, said[-3000:]
    subprocess.run(["ansible", "-i", inventory(), "all", "-b", "-m", "ansible.builtin.shell",
                    "-a", "rm -rf /opt/torch-failtest /var/cache/rnn_bootstrap/torch7-failtest"],
                   capture_output=True, check=False)  # fmt: skip
