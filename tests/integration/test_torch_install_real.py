"""Opt-in: build the REAL torch/distro (pinned commit) with torch_install.

Runs only when CHARRNN_REAL_UPSTREAM names a git mirror of github.com, for example the
loopback mirror of /work/shared/upstream (``mirror serve``):

    CHARRNN_REAL_UPSTREAM=git://127.0.0.1:9418/github.com/ pytest -s tests/integration/test_torch_install_real.py

Needs the build dependencies: apt-get install -y build-essential cmake git libopenblas-dev
libreadline-dev libncurses-dev unzip. Takes a few minutes (about 3.5 on 2 cores).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path

import pytest

DISTRO_COMMIT = "0219027e6c4644a0ba5c5bf137c989a0a8c9e01b"  # torch/distro master tip
MIRROR = os.environ.get("CHARRNN_REAL_UPSTREAM", "")

pytestmark = pytest.mark.skipif(
    not MIRROR, reason="real upstream build is opt-in: set CHARRNN_REAL_UPSTREAM=git://127.0.0.1:9418/github.com/"
)


def _helpers():
    path = Path(__file__).with_name("test_torch_install_fixture.py")
    spec = importlib.util.spec_from_file_location("torch_install_fixture_helpers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_real_torch_distro_builds_and_is_idempotent(tmp_path):
    """REAL upstream: clone torch/distro recursively at the pinned commit, build, verify, rerun."""
    helpers = _helpers()
    src = tmp_path / "distro"
    rewrite = ["-c", f"url.{MIRROR}.insteadOf=https://github.com/"]
    helpers.git(*rewrite, "clone", "-q", "--recursive", "https://github.com/torch/distro.git", str(src))
    helpers.git("checkout", "-q", DISTRO_COMMIT, cwd=src)
    helpers.git(*rewrite, "submodule", "update", "-q", "--init", "--recursive", cwd=src)
    assert helpers.git("rev-parse", "HEAD", cwd=src) == DISTRO_COMMIT

    rc, res = helpers.run_module(tmp_path, src)
    assert rc == 0, {k: res.get(k) for k in ("msg", "failed_step", "log_tail")}
    print(f"\nREAL torch/distro {DISTRO_COMMIT} built in {res['build_seconds']} s; BLAS {res['blas_library']}")
    assert res["changed"] and res["built"] and res["commit"] == DISTRO_COMMIT
    assert "openblas" in res["blas_library"]

    prefix = tmp_path / "install"
    ldd = subprocess.run(["ldd", str(prefix / "lib" / "libTH.so")], capture_output=True, text=True, check=False).stdout
    assert "libopenblas" in ldd, ldd
    probe = subprocess.run(
        [
            "sh",
            "-c",
            f". {prefix / 'bin' / 'torch-activate'} && th -e \"require 'torch'; require 'nn'; "
            "require 'nngraph'; require 'optim'; require 'lfs'; "
            "print('MM', torch.mm(torch.ones(2,3), torch.ones(3,2))[1][1])\"",
        ],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path / "home")},
        check=False,
    )
    assert "MM\t3" in probe.stdout, probe.stdout + probe.stderr

    rc, res = helpers.run_module(tmp_path, src)
    assert rc == 0 and res["changed"] is False and res["built"] is False, res.get("reason")
