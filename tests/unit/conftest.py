"""Shared helpers for the unit tests: the real char-rnn output, and running a module in-process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args

REPO = Path(__file__).resolve().parents[2]
# Genuine char-rnn checkpoints and logs (tests/fixtures/char-rnn/README.md says how they were made).
CHAR_RNN_FIXTURES = REPO / "tests" / "fixtures" / "char-rnn"
FIXTURE_UPSTREAM = REPO / "tests" / "fixtures" / "upstream" / "karpathy" / "char-rnn"

LSTM = ("lm_tiny_epoch0.35_3.3196.t7", "lm_tiny_epoch1.06_3.2739.t7", "lm_tiny_epoch2.00_3.1596.t7")
GRU = "lm_tinygru_epoch1.00_3.1838.t7"


@pytest.fixture(scope="session")
def real() -> Path:
    """The real char-rnn checkpoints and logs; a missing file is an error, not a skip."""
    if not (CHAR_RNN_FIXTURES / GRU).is_file():
        pytest.fail(f"real char-rnn fixtures missing: {CHAR_RNN_FIXTURES} (they are in the repository)", pytrace=False)
    return CHAR_RNN_FIXTURES


@pytest.fixture
def torchfile() -> Any:
    return pytest.importorskip("torchfile", reason="the torchfile package is not installed")


@pytest.fixture(scope="session")
def upstream() -> Path:
    """The fixture char-rnn (train.lua, sample.lua) this project ships for container tests."""
    return FIXTURE_UPSTREAM


def _copy_as(src: Path, dest_dir: Path, name: str, mtime: float | None = None, size: int | None = None) -> Path:
    """Copy a checkpoint under another name: writable, optionally cut to ``size`` bytes and given an mtime."""
    dest = dest_dir / name
    if size is None:
        shutil.copyfile(src, dest)
    else:
        dest.write_bytes(src.read_bytes()[:size])
    if mtime is not None:
        os.utime(dest, (mtime, mtime))
    return dest


@pytest.fixture
def copy_as() -> Callable[..., Path]:
    return _copy_as


class ModuleExit(Exception):
    def __init__(self, failed: bool, result: dict[str, Any]) -> None:
        super().__init__(result.get("msg", ""))
        self.failed = failed
        self.result = result


class ScriptedCommands:
    """Stands in for AnsibleModule.run_command: each call must be the next scripted one.

    A command is a dict: ``argv`` (the whole list), ``cwd`` (compared when given), and the answer
    ``rc`` (default 0), ``out`` and ``err`` (default "").
    """

    def __init__(self, commands: list[dict[str, Any]]) -> None:
        self.expected = list(commands)
        self.calls: list[dict[str, Any]] = []

    def __call__(self, args: list[str], cwd: str | None = None, **kwargs: Any) -> tuple[int, str, str]:
        self.calls.append({"argv": list(args), "cwd": cwd, **kwargs})
        n = len(self.calls)
        assert n <= len(self.expected), f"command {n} was not expected: {args}"
        want = self.expected[n - 1]
        assert list(args) == want["argv"], f"command {n}"
        if "cwd" in want:
            assert cwd == want["cwd"], f"cwd of command {n}: {args}"
        return want.get("rc", 0), want.get("out", ""), want.get("err", "")

    def assert_done(self) -> None:
        missing = [c["argv"] for c in self.expected[len(self.calls) :]]
        assert not missing, f"commands not run: {missing}"


def _run_module(
    main: Any,
    args: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    commands: list[dict[str, Any]] | None = None,
    run_command: Callable[..., tuple[int, str, str]] | None = None,
) -> tuple[bool, dict[str, Any]]:
    """Run a module's main() with its arguments fed the way Ansible does; return (failed, result).

    ``commands`` scripts every command the module may run (``[]``: it must run none), see
    ScriptedCommands; ``run_command(args, cwd=None, **kwargs)`` answers them instead. With
    neither, run_command is the real one.
    """

    def exit_json(self: basic.AnsibleModule, **kwargs: Any) -> None:
        raise ModuleExit(False, kwargs)

    def fail_json(self: basic.AnsibleModule, msg: str, **kwargs: Any) -> None:
        kwargs["msg"] = msg
        raise ModuleExit(True, kwargs)

    monkeypatch.setattr(basic.AnsibleModule, "exit_json", exit_json)
    monkeypatch.setattr(basic.AnsibleModule, "fail_json", fail_json)
    script = ScriptedCommands(commands) if commands is not None else None
    answer = script or run_command
    if answer is not None:
        monkeypatch.setattr(basic.AnsibleModule, "run_command", lambda self, *a, **kw: answer(*a, **kw))
    with patch_module_args(args), pytest.raises(ModuleExit) as caught:
        main()
    if script is not None and not caught.value.failed:
        script.assert_done()
    # what would go over the wire must be JSON
    json.dumps(caught.value.result)
    return caught.value.failed, caught.value.result


RunModule = Callable[..., tuple[bool, dict[str, Any]]]


@pytest.fixture
def run_module(monkeypatch: pytest.MonkeyPatch) -> RunModule:
    """``run_module(main, args, commands=None, run_command=None)``: see _run_module."""
    return lambda main, args, **kwargs: _run_module(main, args, monkeypatch, **kwargs)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Table-driven tests: a test that takes ``case`` runs once per entry of the list named after
    it in the YAML file beside its module (test_x.py -> test_x.yaml); each entry's ``id`` names it."""
    if "case" not in metafunc.fixturenames:
        return
    path = Path(metafunc.definition.path).with_suffix(".yaml")
    cases = yaml.safe_load(path.read_text(encoding="utf-8"))[metafunc.definition.originalname]
    ids = [case["id"] for case in cases]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    assert not duplicates, f"{path}: duplicate case ids {duplicates}"
    metafunc.parametrize("case", cases, ids=ids)


def _ansible_adhoc(*args: str) -> dict[str, Any]:
    """`ansible localhost ARGS` against this checkout (ansible.cfg finds the collection in .cache)."""
    # the ansible next to this Python (a virtualenv's bin/), else the one on PATH
    exe = shutil.which("ansible", path=str(Path(sys.executable).parent)) or shutil.which("ansible")
    if not exe:
        pytest.skip("the ansible command is not installed")
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        ANSIBLE_STDOUT_CALLBACK="json",
        ANSIBLE_LOCALHOST_WARNING="0",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="0",
    )
    proc = subprocess.run(
        [exe, "localhost", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.stdout, proc.stderr
    return json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]


@pytest.fixture
def ansible_adhoc() -> Callable[..., dict[str, Any]]:
    """Run a module the way a user would, with the ansible command; returns the host's result."""
    return _ansible_adhoc
