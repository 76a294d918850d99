"""The container test bed's platform data: what a platform without systemd and a testing release get."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import yaml

TESTBED = Path(__file__).resolve().parents[2] / "tests" / "containers" / "testbed.py"


@pytest.fixture(scope="module")
def testbed():
    spec = importlib.util.spec_from_file_location("testbed", TESTBED)
    module = importlib.util.module_from_spec(spec)
    sys.modules["testbed"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_debian_testing_is_marked_and_boots_without_systemd(testbed):
    platforms = {p.name: p for p in testbed.load_platforms([])}
    forky = platforms["debian-14"]
    assert (forky.debootstrap, forky.testing, forky.systemd) == ("forky", True, False)
    assert all(p.systemd and not p.testing for name, p in platforms.items() if name != "debian-14")


def test_override_runs_systemd_only_where_it_boots(testbed, tmp_path, monkeypatch):
    bundle = tmp_path / "ca.crt"
    bundle.write_text("a CA\n")
    monkeypatch.setenv("PIP_CERT", str(bundle))
    override = tmp_path / "platforms.yml"
    testbed.platforms_override("default", testbed.load_platforms(["debian-12", "debian-14"]), override)
    entries = {e["name"]: e for e in yaml.safe_load(override.read_text())["platforms"]}
    booted, plain = entries["charrnn-default-debian-12"], entries["charrnn-default-debian-14"]
    assert (booted["systemd"], booted["command"]) == ("always", "/sbin/init")
    assert "systemd" not in plain and plain["command"] == "sleep infinity"
    assert plain["extra_opts"] == ["--stop-signal=SIGKILL"]
    # Both trust the controller's CA for pip, through /etc/pip.conf (become's sudo drops env vars).
    for entry in (booted, plain):
        assert entry["volumes"] == [f"{bundle}:{testbed.HOST_CA}:ro", f"{tmp_path / 'pip.conf'}:/etc/pip.conf:ro"]
    assert f"cert = {testbed.HOST_CA}" in (tmp_path / "pip.conf").read_text()


def test_no_ca_bundle_no_mounts(testbed, tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_CERT", str(tmp_path / "missing.crt"))
    assert testbed.controller_ca(tmp_path / "pip.conf") == {}


def test_service_scenarios_need_systemd(testbed):
    assert {"train", "train_real", "fleet"} <= testbed.NEEDS_SYSTEMD
    assert "default" not in testbed.NEEDS_SYSTEMD and "real" not in testbed.NEEDS_SYSTEMD


def test_a_suite_newer_than_debootstrap_uses_the_sid_script(testbed, tmp_path):
    """Debian 12's debootstrap knows trixie (a link to sid) but not forky."""
    (tmp_path / "sid").write_text("")
    (tmp_path / "trixie").symlink_to("sid")
    assert testbed.debootstrap_script("trixie", tmp_path) == []
    assert testbed.debootstrap_script("forky", tmp_path) == [str(tmp_path / "sid")]
