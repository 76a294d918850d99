"""Verify a host provisioned by site.yml (testinfra, run by Molecule's verifier).

In the default scenario torch/distro and char-rnn are the project's FIXTURE repos (see
tests/fixtures/upstream): these tests prove the collection's wiring (packages, clone through the
URL rewrite at the pinned commit, the torch_install build path, activation, users, corpus), not
real Torch. The opt-in `real` scenario runs the real upstream.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

PREFIX = "/opt/torch/install"
CHAR_RNN = "/opt/rnn-karpathy"
UPSTREAM_URL = os.environ.get("CHARRNN_UPSTREAM_URL", "")
TORCH7_VERSION = os.environ.get("CHARRNN_TORCH7_VERSION", "")
CHAR_RNN_VERSION = os.environ.get("CHARRNN_CHAR_RNN_VERSION", "")
TORCH7_DEFAULTS = yaml.safe_load((Path(__file__).parents[3] / "roles/torch7/defaults/main.yml").read_text())


@pytest.mark.parametrize("command", ["gcc --version", "g++ --version", "cmake --version", "git --version", "unzip -v"])
def test_build_tools_run(host, command):
    assert host.run(command).rc == 0, command


@pytest.mark.parametrize("header", ["readline/readline.h", "ncurses.h", "jpeglib.h", "png.h"])
def test_development_headers_installed(host, header):
    assert host.run(f"echo '#include <{header}>' | cpp -o /dev/null -").rc == 0, header


def test_openblas_resolves_to_openmp_build(host):
    resolved = host.check_output("readlink -f $(gcc -print-file-name=libopenblas.so.0)")
    assert "openblas-openmp" in resolved, resolved
    assert "libgomp" in host.check_output("ldd %s", resolved)


def test_blas_alternative_points_at_openmp(host):
    arch = host.check_output("gcc -print-multiarch")
    assert "openblas-openmp" in host.check_output(f"readlink -f /usr/lib/{arch}/libblas.so.3")


def test_git_url_rewrite_is_system_wide(host):
    assert UPSTREAM_URL, "CHARRNN_UPSTREAM_URL is set by tests/containers/testbed.py"
    assert host.check_output(f"git config --system --get url.{UPSTREAM_URL}.insteadOf") == "https://github.com/"


def test_torch_checkout_is_at_the_pinned_commit(host):
    assert host.check_output("git -C /opt/torch rev-parse HEAD") == TORCH7_VERSION
    assert host.check_output("git -C /opt/torch status --porcelain --ignore-submodules=none") == ""


def test_build_record_names_the_commit_and_blas(host):
    record = json.loads(host.file(f"{PREFIX}/.rnn_bootstrap-build.json").content_string)
    assert record["commit"] == TORCH7_VERSION
    assert "openblas" in record["blas_library"], record


def test_cmake_4_hosts_build_with_the_pinned_cmake_3(host):
    """torch/distro (and the FIXTURE's CMakeLists, both `cmake_minimum_required` < 3.5) does not
    configure under CMake 4: there the torch7 role installs CMake 3 from PyPI and builds with it."""
    system = host.check_output("cmake --version").split()[2]
    record = json.loads(host.file(f"{PREFIX}/.rnn_bootstrap-build.json").content_string)
    if int(system.split(".")[0]) >= 4:
        pinned = TORCH7_DEFAULTS["torch7_cmake3_version"]
        assert host.check_output(f"{TORCH7_DEFAULTS['torch7_cmake3_venv']}/bin/cmake --version").split()[2] == pinned
        assert record["cmake_version"] == pinned, record
    else:
        assert not host.file(TORCH7_DEFAULTS["torch7_cmake3_venv"]).exists, "a CMake 3 where the system's is 3"
        assert record["cmake_version"] == system, record


def test_th_requires_what_char_rnn_needs(host):
    out = host.check_output(
        "th -e \"require 'torch'; require 'nn'; require 'nngraph'; require 'optim'; require 'lfs'; print('ok')\""
    )
    assert out.splitlines()[-1] == "ok", out


def test_libth_links_the_openmp_openblas(host):
    linked = host.check_output(f"ldd {PREFIX}/lib/libTH.so")
    assert "libopenblas.so.0" in linked, linked


def test_activation_is_system_wide_and_no_rc_was_edited(host):
    assert host.file("/etc/profile.d/torch.sh").contains(f"{PREFIX}/bin")
    assert host.check_output("bash -lc 'command -v th'") in (f"{PREFIX}/bin/th", "/usr/local/bin/th")
    for rc in ("/root/.bashrc", "/root/.zshrc", "/root/.profile"):
        assert not host.file(rc).exists or not host.file(rc).contains("torch"), rc


def test_rocks_are_in_torchs_tree(host):
    listed = host.check_output(f"{PREFIX}/bin/luarocks list --porcelain")
    names = {line.split("\t")[0] for line in listed.splitlines() if line.strip()}
    assert {"torch", "nn", "nngraph", "optim", "luafilesystem", "lua-cjson"} <= names, names


def test_training_user_owns_data_and_cv(host):
    user = host.user("charrnn")
    assert user.exists and user.shell == "/usr/sbin/nologin"
    assert user.uid < 1000, "a system user"
    for folder in ("data", "data/tinyshakespeare", "cv"):
        assert host.file(f"{CHAR_RNN}/{folder}").user == "charrnn", folder


def test_char_rnn_is_at_the_pinned_commit_with_its_corpus(host):
    assert host.check_output(f"git -C {CHAR_RNN} rev-parse HEAD") == CHAR_RNN_VERSION
    assert host.file(f"{CHAR_RNN}/data/tinyshakespeare/input.txt").size > 10_000


def test_the_training_user_can_train(host):
    """The FIXTURE train.lua under the built th, as the unprivileged user, writes a checkpoint."""
    run = host.run(
        f"cd {CHAR_RNN} && FIXTURE_SECONDS_PER_BATCH=0 runuser -u charrnn -- th train.lua -gpuid -1 "
        "-rnn_size 16 -num_layers 1 -seq_length 20 -batch_size 10 -max_epochs 0.1 -eval_val_every 20 "
        "-savefile verify -checkpoint_dir cv/verify"
    )
    assert run.rc == 0, run.stdout[-1500:] + run.stderr[-1500:]
    assert "saving checkpoint to cv/verify/lm_verify_epoch" in run.stdout
    host.run(f"rm -rf {CHAR_RNN}/cv/verify")
