"""Pinned and verified downloads, run for real with ansible-playbook on localhost.

- torch7's CMake 3: pip installs the wheel only against the role's sha256 pins (the real wheel from PyPI,
  offline through torch7_cmake3_find_links; a wrong pin is refused; a version without pins is refused);
- luarocks: extra rocks without a version are refused (or, with luarocks_unpinned=warn, named).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from localplay import playbook, task_results

REPO = Path(__file__).resolve().parents[2]
CMAKE_VERSION = yaml.safe_load((REPO / "roles/torch7/defaults/main.yml").read_text())["torch7_cmake3_version"]
PINS = yaml.safe_load((REPO / "roles/torch7/vars/main.yml").read_text())["__torch7_cmake3_wheel_sha256"]


def cmake3_play(venv: Path, **role_vars) -> list[dict]:
    return [
        {
            "hosts": "localhost",
            "gather_facts": False,
            "vars": {"ansible_facts": {"python": {"executable": sys.executable}}},
            "tasks": [
                {
                    "name": "CMake 3",
                    "ansible.builtin.include_role": {"name": "rnn_bootstrap.char_rnn.torch7", "tasks_from": "cmake3"},
                    "vars": {"torch7_cmake3_venv": str(venv), **role_vars},
                }
            ],
        }
    ]


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real CMake 3 wheel for this machine, downloaded once from PyPI (as an air-gapped user would)."""
    folder = tmp_path_factory.mktemp("wheels")
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-deps", "--only-binary", ":all:",
         "-d", str(folder), f"cmake=={CMAKE_VERSION}"],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    assert list(folder.glob(f"cmake-{CMAKE_VERSION}-*.whl"))
    return folder


def test_the_default_version_has_pins_for_the_linux_wheels():
    assert CMAKE_VERSION in PINS
    assert len(PINS[CMAKE_VERSION]) == len(set(PINS[CMAKE_VERSION])) == 14
    assert all(len(h) == 64 and int(h, 16) >= 0 for h in PINS[CMAKE_VERSION])


def test_cmake3_installs_offline_only_against_the_pins(tmp_path: Path, wheels: Path):
    venv = tmp_path / "venv"
    first = playbook(tmp_path, cmake3_play(venv, torch7_cmake3_find_links=str(wheels)))
    assert first["stats"]["localhost"]["failures"] == 0, json.dumps(first, indent=1)
    install = task_results(first)["Install the pinned CMake 3 (pip refuses a wheel whose sha256 is not pinned)"]
    assert "--require-hashes" in install["cmd"] and "--no-index" in install["cmd"]
    version = subprocess.run([str(venv / "bin/cmake"), "--version"], capture_output=True, text=True, check=True)
    assert f"cmake version {CMAKE_VERSION}" in version.stdout
    again = playbook(tmp_path, cmake3_play(venv, torch7_cmake3_find_links=str(wheels)))
    assert again["stats"]["localhost"]["changed"] == 0, json.dumps(again, indent=1)


def test_a_wheel_that_does_not_match_the_pins_is_refused(tmp_path: Path, wheels: Path):
    venv = tmp_path / "venv"
    data = playbook(tmp_path, cmake3_play(venv, torch7_cmake3_find_links=str(wheels), torch7_cmake3_hashes=["0" * 64]))
    assert data["stats"]["localhost"]["failures"] == 1
    failed = task_results(data)["Install the pinned CMake 3 (pip refuses a wheel whose sha256 is not pinned)"]
    assert "THESE PACKAGES DO NOT MATCH THE HASHES" in failed["stderr"], failed
    assert not (venv / "bin/cmake").exists()


@pytest.mark.parametrize(
    ("role_vars", "needle"),
    [
        ({"torch7_cmake3_version": "3.30.0"}, "torch7_cmake3_version 3.30.0: pip installs it only against sha256"),
        ({"torch7_cmake3_hashes": ["sha256:abc"]}, "torch7_cmake3_hashes has entries that are not 64 lowercase hex"),
    ],
)
def test_versions_without_pins_are_refused_before_anything_is_downloaded(tmp_path: Path, role_vars, needle):
    data = playbook(tmp_path, cmake3_play(tmp_path / "venv", **role_vars))
    failed = task_results(data)["Check that the CMake 3 wheel can be verified"]
    assert failed["failed"] and needle in " ".join(failed["msg"].split()), failed
    assert "Set torch7_cmake3_hashes to the sha256 of its wheels" in " ".join(failed["msg"].split())
    assert not (tmp_path / "venv").exists()


def luarocks_play(**role_vars) -> list[dict]:
    base = {"luarocks_torch_rocks": [], "luarocks_rocks": [], "luarocks_executable": "/nonexistent/luarocks"}
    return [
        {
            "hosts": "localhost",
            "gather_facts": False,
            "roles": [{"role": "rnn_bootstrap.char_rnn.luarocks", "vars": {**base, **role_vars}}],
        }
    ]


EXTRA = ["lua-cjson", {"name": "dkjson", "version": "2.8-1"}, {"name": "penlight", "state": "latest"}]


def test_unpinned_extra_rocks_are_refused_before_anything_is_installed(tmp_path: Path):
    data = playbook(tmp_path, luarocks_play(luarocks_extra_rocks=EXTRA))
    tasks = task_results(data)
    failed = tasks["Check that every extra rock is pinned to a version"]
    msg = " ".join(failed["msg"].split())
    assert failed["failed"]
    assert msg.startswith(
        "lua-cjson (luarocks_extra_rocks, no version), penlight (luarocks_extra_rocks, state latest) would install"
    )
    assert "dkjson" not in msg
    assert "Manage extra rocks" not in tasks  # nothing ran after the refusal


def test_warn_names_them_and_goes_on(tmp_path: Path):
    data = playbook(tmp_path, luarocks_play(luarocks_extra_rocks=EXTRA, luarocks_unpinned="warn"))
    tasks = task_results(data)
    assert tasks["Warn about unpinned rocks"]["msg"].startswith("WARNING: lua-cjson (luarocks_extra_rocks, no version)")
    # it went on to install them (and here fails on the missing luarocks, as it should)
    assert "luarocks executable /nonexistent/luarocks does not exist" in str(tasks["Manage extra rocks"])


def test_pinned_extra_rocks_pass(tmp_path: Path):
    data = playbook(tmp_path, luarocks_play(luarocks_extra_rocks=[{"name": "dkjson", "version": "2.8-1"}]))
    check = task_results(data)["Check that every extra rock is pinned to a version"]
    assert check["msg"] == "every extra rock is pinned"
