"""FIXTURE integration tests for rnn_bootstrap.char_rnn.torch_install.

They generate the FIXTURE upstream (tests/fixtures/upstream/build.py: tiny stand-ins laid out
like torch/distro and its submodules, nothing of real Torch), clone it recursively through a
file:// URL rewrite exactly as hosts clone GitHub, and run the module for real through
`ansible localhost -m rnn_bootstrap.char_rnn.torch_install`.

Needs git, luajit, gcc, cmake, make and OpenBLAS (apt-get install git luajit build-essential
cmake libopenblas-dev). Skipped when missing, failed instead with CHARRNN_REQUIRE_TOOLS=1.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "upstream"
TOOLS = ("git", "luajit", "gcc", "cmake", "make", "ldd")
GIT_ENV = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}


def missing_tools():
    missing = [tool for tool in TOOLS if not shutil.which(tool)]
    if not glob.glob("/usr/lib/*/libopenblas.so") + glob.glob("/usr/lib/libopenblas.so"):
        missing.append("libopenblas-dev")
    return missing


@pytest.fixture(scope="module")
def tools():
    missing = missing_tools()
    if missing:
        needs = ", ".join(missing)
        msg = f"FIXTURE build needs {needs} (apt-get install git luajit build-essential cmake libopenblas-dev)"
        if os.environ.get("CHARRNN_REQUIRE_TOOLS") == "1":
            pytest.fail(msg)
        pytest.skip(msg)


def load_generator():
    spec = importlib.util.spec_from_file_location("fixture_upstream_build", FIXTURES / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def git(*args, cwd=None):
    env = dict(os.environ, **GIT_ENV)
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def checkout(tools, tmp_path_factory):
    """FIXTURE upstream generated and cloned with --recursive via an insteadOf rewrite."""
    root = tmp_path_factory.mktemp("fixture-upstream")
    shas = load_generator().build(root / "mirror")
    src = root / "distro"
    git(
        "-c",
        "protocol.file.allow=always",
        "-c",
        "url.file://%s/github.com/.insteadOf=https://github.com/" % (root / "mirror"),
        "clone",
        "-q",
        "--recursive",
        "https://github.com/torch/distro.git",
        str(src),
    )
    assert git("rev-parse", "HEAD", cwd=src) == shas["torch/distro"]
    return src, shas


def ansible_ansible():
    candidate = Path(sys.executable).parent / "ansible"
    return str(candidate) if candidate.exists() else shutil.which("ansible")


def run_module(tmp, src, check=False, **args):
    """Run the module through `ansible localhost -m`; returns (rc, result dict)."""
    module_args = {
        "src": str(src),
        "prefix": str(tmp / "install"),
        "log_path": str(tmp / "log" / "torch-build.log"),
    }
    module_args.update(args)
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        ANSIBLE_CALLBACK_RESULT_FORMAT="json",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_LOCALHOST_WARNING="0",
        HOME=str(tmp / "home"),
    )
    (tmp / "home").mkdir(exist_ok=True)
    cmd = [
        ansible_ansible(),
        "localhost",
        "-c",
        "local",
        "-i",
        "localhost,",
        "-e",
        f"ansible_python_interpreter={sys.executable}",
        "-m",
        "rnn_bootstrap.char_rnn.torch_install",
        "-a",
        json.dumps(module_args),
    ]
    if check:
        cmd.append("--check")
    proc = subprocess.run(cmd, cwd=str(REPO), env=env, capture_output=True, text=True, timeout=1800, check=False)
    out = proc.stdout
    assert "=>" in out, out + proc.stderr
    return proc.returncode, json.loads(out.split("=>", 1)[1])


def test_fixture_check_mode_builds_nothing(checkout, tmp_path):
    """FIXTURE: --check on a fresh host reports the build it would do and creates nothing."""
    src, shas = checkout
    rc, res = run_module(tmp_path, src, check=True)
    assert rc == 0, res
    assert res["changed"] is True and res["built"] is True
    assert res["reason"] == "no build record"
    assert res["commit"] == shas["torch/distro"]
    assert not (tmp_path / "install").exists()
    assert "export PATH=" in res["activation"]


def test_fixture_build_is_idempotent_and_links_openblas(checkout, tmp_path):
    """FIXTURE: first run builds (th works, libTH links OpenBLAS), second run is ok/unchanged."""
    src, shas = checkout
    rc, res = run_module(tmp_path, src)
    assert rc == 0, res
    assert res["changed"] is True and res["built"] is True
    assert res["commit"] == shas["torch/distro"]
    assert "openblas" in res["blas_library"]
    assert res["packages"][-1] == "optim" and "xlua" in res["packages"]
    prefix = tmp_path / "install"
    libth = prefix / "lib" / "libTH.so"
    assert "libopenblas" in subprocess.run(["ldd", str(libth)], capture_output=True, text=True, check=False).stdout
    out = subprocess.run(
        [str(prefix / "bin" / "th"), "-e", "require 'nngraph'; require 'optim'; print(torch.dot({1,2,3},{4,5,6}))"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=dict(os.environ, LD_LIBRARY_PATH=str(prefix / "lib")),
        check=False,
    )
    assert out.stdout.strip().endswith("32"), out
    # activation: torch-activate (the torch7 role's profile script holds the same text) sourced by sh
    # puts th on PATH; no rc file touched, nothing written outside the prefix, the build tree and the log
    activate = prefix / "bin" / "torch-activate"
    assert activate.read_text() == res["activation"]
    assert sorted(os.listdir(tmp_path)) == ["home", "install", "log"]
    shell = subprocess.run(
        ["sh", "-c", f". {activate} && command -v th && echo $LD_LIBRARY_PATH"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path / "home")},
        check=False,
    )
    assert shell.stdout.splitlines() == [str(prefix / "bin" / "th"), str(prefix / "lib")]
    assert not {".bashrc", ".profile", ".zshrc"} & set(os.listdir(tmp_path / "home"))
    log = (tmp_path / "log" / "torch-build.log").read_text()
    assert "==> [luarocks make torch]" in log and "FIXTURE libTH: BLAS found" in log

    rc, res = run_module(tmp_path, src)
    assert rc == 0, res
    assert res["changed"] is False and res["built"] is False
    assert res["reason"].startswith("up to date")


def test_fixture_changed_commit_flavour_or_broken_install_rebuilds(checkout, tmp_path):
    """FIXTURE: a new source commit, another Lua flavour or a broken install trigger a rebuild."""
    src, _shas = checkout
    assert run_module(tmp_path, src)[0] == 0
    before = git("rev-parse", "HEAD", cwd=src)
    git(
        "-c",
        "user.name=fixture",
        "-c",
        "user.email=fixture@rnn-bootstrap.invalid",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "FIXTURE: a new upstream commit",
        cwd=src,
    )
    try:
        rc, res = run_module(tmp_path, src)
        assert rc == 0 and res["built"], res
        assert f"commit changed: {before}" in res["reason"]

        rc, res = run_module(tmp_path, src, lua_flavour="LUA51")
        assert rc == 0 and res["built"] and "lua_flavour changed" in res["reason"], res
        assert (tmp_path / "install" / "bin" / "lua").exists()
        assert not (tmp_path / "install" / "bin" / "luajit").exists()  # old prefix was cleaned

        os.unlink(tmp_path / "install" / "lib" / "libTH.so")
        rc, res = run_module(tmp_path, src, lua_flavour="LUA51")
        assert rc == 0 and res["built"] and "install broken" in res["reason"], res
        rc, res = run_module(tmp_path, src, lua_flavour="LUA51")
        assert rc == 0 and not res["changed"], res
        assert git("status", "--porcelain", "--ignored=no", cwd=src) == ""  # checkout left clean
    finally:
        git("reset", "-q", "--hard", before, cwd=src)


def test_fixture_failure_reports_step_and_tail(checkout, tmp_path):
    """FIXTURE: a broken package reports the failing luarocks step and the log tail."""
    src, _shas = checkout
    rockspec = src / "extra" / "nngraph" / "nngraph-scm-1.rockspec"
    original = rockspec.read_text()
    rockspec.write_text(original.replace('"nn"', '"nn", "no-such-rock"'))
    try:
        rc, res = run_module(tmp_path, src)
    finally:
        rockspec.write_text(original)
    assert rc != 0
    assert res["failed_step"] == "luarocks make nngraph"
    assert "missing dependency no-such-rock" in res["log_tail"]
    assert "incomplete" in (tmp_path / "install" / ".rnn_bootstrap-build.json").read_text()


def test_fixture_install_sh_prompts_like_upstream(checkout, tmp_path):
    """FIXTURE: the stand-in install.sh asks before editing ~/.bashrc (why the module never runs it)."""
    src, _shas = checkout
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text("# user's\n")
    proc = subprocess.run(
        ["bash", str(src / "install.sh")],
        input="no\n",
        capture_output=True,
        text=True,
        env=dict(os.environ, HOME=str(home), PREFIX=str(tmp_path / "install"), SHELL="/bin/bash"),
        cwd=str(src),
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "(yes/no)" in proc.stdout
    assert (home / ".bashrc").read_text() == "# user's\n"
    shutil.rmtree(src / "build", ignore_errors=True)
