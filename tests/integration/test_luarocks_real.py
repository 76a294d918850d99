"""The luarocks module against a real LuaRocks (Debian's /usr/bin/luarocks), run through ansible-playbook.

Nothing touches the system rocks tree or the network: every task uses ``tree`` in tmp_path, rocks
come from rockspecs written here (builtin build type, one pure-Lua file) and from a local
file-based rocks server built with ``luarocks pack`` + ``luarocks-admin make_manifest``.

Needs the Debian package ``luarocks`` (pulls lua5.1 and liblua5.1-dev). Without it these tests
skip, unless CHARRNN_REQUIRE_LUAROCKS=1 (CI), where they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LUAROCKS = shutil.which("luarocks") or "/usr/bin/luarocks"
LUAROCKS_ADMIN = shutil.which("luarocks-admin") or "/usr/bin/luarocks-admin"
ANSIBLE_PLAYBOOK = shutil.which("ansible-playbook", path=str(Path(sys.executable).parent)) or shutil.which(
    "ansible-playbook"
)


@pytest.fixture(autouse=True, scope="module")
def _require_luarocks():
    missing = [p for p in (LUAROCKS, LUAROCKS_ADMIN) if not os.access(p, os.X_OK)]
    if not ANSIBLE_PLAYBOOK:
        missing.append("ansible-playbook")
    if missing:
        reason = f"real LuaRocks tests need {', '.join(missing)} (apt-get install -y luarocks)"
        if os.environ.get("CHARRNN_REQUIRE_LUAROCKS") == "1":
            pytest.fail(reason + "; CHARRNN_REQUIRE_LUAROCKS=1 is set", pytrace=False)
        pytest.skip(reason)


def write_rock(directory: Path, name: str, version: str, body: str | None = None) -> Path:
    """A builtin-type rockspec with one pure-Lua module; returns the rockspec path."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.lua").write_text(body or f'return {{ version = "{version}" }}\n')
    rockspec = directory / f"{name}-{version}.rockspec"
    rockspec.write_text(
        f'package = "{name}"\n'
        f'version = "{version}"\n'
        f'source = {{ url = "file://{directory}/{name}.tar.gz" }}\n'
        f'description = {{ summary = "test rock {name}" }}\n'
        'dependencies = { "lua >= 5.1" }\n'
        f'build = {{ type = "builtin", modules = {{ ["{name}"] = "{name}.lua" }} }}\n'
    )
    return rockspec


def luarocks(*args: str, cwd: Path | None = None, home: Path) -> str:
    env = dict(os.environ, HOME=str(home), LC_ALL="C")
    proc = subprocess.run([LUAROCKS, *args], cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"luarocks {args} failed: {proc.stdout}\n{proc.stderr}"
    return proc.stdout


def installed(tree: Path, name: str, home: Path) -> list[str]:
    out = luarocks(f"--tree={tree}", "list", "--porcelain", name, home=home)
    return [line.split("\t")[1] for line in out.splitlines() if line.split("\t")[0] == name]


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """A private HOME so that luarocks' cache/config and ~/.ansible stay in tmp."""
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module")
def server(tmp_path_factory, home) -> Path:
    """A local rocks server directory holding hello 1.0-1 and 1.1-1 (source rockspec + .all.rock)."""
    base = tmp_path_factory.mktemp("server-build")
    build_tree = base / "tree"
    srv = base / "rocks"
    srv.mkdir()
    for version in ("1.0-1", "1.1-1"):
        rockspec = write_rock(base / f"src-{version}", "hello", version)
        luarocks(f"--tree={build_tree}", "make", str(rockspec), cwd=rockspec.parent, home=home)
        luarocks(f"--tree={build_tree}", "pack", "hello", version, cwd=srv, home=home)
        shutil.copy(rockspec, srv)
    subprocess.run(
        [LUAROCKS_ADMIN, "make_manifest", str(srv)],
        check=True,
        capture_output=True,
        env=dict(os.environ, HOME=str(home)),
    )
    assert (srv / "manifest").is_file()
    return srv


class Runner:
    def __init__(self, tmp_path: Path, home: Path):
        self.tmp_path = tmp_path
        self.home = home
        self.tree = tmp_path / "tree"
        self.count = 0

    def __call__(self, check_mode: bool = False, **args) -> dict:
        """Run one rnn_bootstrap.char_rnn.luarocks task and return its result."""
        args.setdefault("executable", LUAROCKS)
        args.setdefault("tree", str(self.tree))
        task = {"name": "luarocks", "rnn_bootstrap.char_rnn.luarocks": args, "check_mode": check_mode}
        data = self.playbook([{"hosts": "localhost", "gather_facts": False, "tasks": [task]}])
        return data["plays"][0]["tasks"][0]["hosts"]["localhost"]

    def playbook(self, play: list) -> dict:
        """Run a playbook (as data) with the JSON callback and return the callback's document."""
        self.count += 1
        playbook = self.tmp_path / f"play{self.count}.yml"
        playbook.write_text(json.dumps(play))
        env = dict(
            os.environ,
            HOME=str(self.home),
            ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
            ANSIBLE_STDOUT_CALLBACK="json",
            ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_DEPRECATION_WARNINGS="0",
            ANSIBLE_LOCALHOST_WARNING="0",
        )
        argv = [
            ANSIBLE_PLAYBOOK,
            "-i",
            "localhost,",
            "-c",
            "local",
            "-e",
            f"ansible_python_interpreter={sys.executable}",
        ]
        proc = subprocess.run([*argv, str(playbook)], cwd=REPO, env=env, capture_output=True, text=True, check=False)
        try:
            return json.loads(proc.stdout)
        except json.JSONDecodeError:
            pytest.fail(f"ansible-playbook gave no JSON (rc={proc.returncode}):\n{proc.stdout}\n{proc.stderr}")


@pytest.fixture
def run(tmp_path, home) -> Runner:
    return Runner(tmp_path, home)


def test_make_install_idempotent_and_remove(run, home, tmp_path):
    rockspec = write_rock(tmp_path / "src", "hello", "1.0-1")

    first = run(rockspec=str(rockspec))
    assert first.get("failed") is not True, first
    assert first["changed"] is True
    assert first["versions_before"] == {"hello": []}
    assert first["versions_after"] == {"hello": ["1.0-1"]}
    assert any(" make " in c for c in first["cmd"])
    assert installed(run.tree, "hello", home) == ["1.0-1"]
    assert (run.tree / "share" / "lua" / "5.1" / "hello.lua").is_file()

    again = run(rockspec=str(rockspec))
    assert again["changed"] is False, again
    assert not any(" make " in c for c in again["cmd"])

    # The same rock by name is present too.
    assert run(name="hello")["changed"] is False

    # A new rockspec version is built and replaces the old one (luarocks make drops other versions).
    newer = write_rock(tmp_path / "src2", "hello", "1.1-1")
    upgraded = run(rockspec=str(newer))
    assert upgraded["changed"] is True
    assert upgraded["versions_after"] == {"hello": ["1.1-1"]}

    # force rebuilds the same version.
    assert run(rockspec=str(newer), force=True)["changed"] is True

    removed = run(name="hello", state="absent")
    assert removed["changed"] is True
    assert removed["versions_after"] == {"hello": []}
    assert installed(run.tree, "hello", home) == []

    assert run(name="hello", state="absent")["changed"] is False


def test_check_mode_installs_nothing(run, home, tmp_path, server):
    rockspec = write_rock(tmp_path / "src", "hello", "1.0-1")
    result = run(check_mode=True, rockspec=str(rockspec))
    assert result["changed"] is True
    assert result["versions_after"] == {"hello": ["1.0-1"]}
    assert installed(run.tree, "hello", home) == []

    result = run(check_mode=True, name="hello", state="latest", server=str(server), only_server=True)
    assert result["changed"] is True
    assert result["versions_after"] == {"hello": ["1.1-1"]}
    assert installed(run.tree, "hello", home) == []

    run(rockspec=str(rockspec))
    result = run(check_mode=True, name="hello", state="absent")
    assert result["changed"] is True
    assert result["versions_after"] == {"hello": []}
    assert installed(run.tree, "hello", home) == ["1.0-1"]


def test_server_version_pinning_and_latest(run, home, server):
    pinned = run(name="hello", version="1.0-1", server=str(server), only_server=True)
    assert pinned.get("failed") is not True, pinned
    assert pinned["changed"] is True
    assert installed(run.tree, "hello", home) == ["1.0-1"]

    # Version without revision matches; plain present is satisfied by any version.
    assert run(name="hello", version="1.0", server=str(server), only_server=True)["changed"] is False
    assert run(name="hello", server=str(server), only_server=True)["changed"] is False

    latest = run(name="hello", state="latest", server=str(server), only_server=True)
    assert latest["changed"] is True
    assert latest["versions_before"] == {"hello": ["1.0-1"]}
    assert latest["versions_after"] == {"hello": ["1.1-1"]}
    assert run(name="hello", state="latest", server=str(server), only_server=True)["changed"] is False

    # Pinning back to the older version downgrades.
    down = run(name="hello", version="1.0-1", server=str(server), only_server=True)
    assert down["changed"] is True
    assert installed(run.tree, "hello", home) == ["1.0-1"]

    # Removing just one version of several (installed side by side with --keep).
    run(name="hello", version="1.1-1", server=str(server), only_server=True, extra_args=["--keep"])
    assert sorted(installed(run.tree, "hello", home)) == ["1.0-1", "1.1-1"]
    partial = run(name="hello", state="absent", version="1.0-1")
    assert partial["changed"] is True
    assert installed(run.tree, "hello", home) == ["1.1-1"]


def test_broken_rockspec_fails_clearly(run, home, tmp_path):
    rockspec = write_rock(tmp_path / "src", "broken", "0.1-1")
    (tmp_path / "src" / "broken.lua").unlink()  # the module file the rockspec names is missing
    result = run(rockspec=str(rockspec))
    assert result["failed"] is True
    assert result["msg"].startswith("luarocks make failed for rock 'broken ("), result["msg"]
    assert "rc=" in result["msg"]
    assert result["rc"] != 0
    assert result["failed_cmd"].endswith(str(rockspec))
    assert installed(run.tree, "broken", home) == []


def test_unknown_rock_fails_clearly(run, server):
    result = run(name="no-such-rock", server=str(server), only_server=True)
    assert result["failed"] is True
    assert "luarocks install failed for rock 'no-such-rock'" in result["msg"]
    assert "No results matching query" in result["msg"]


def test_missing_executable_does_not_fall_back(run, tmp_path):
    exe = tmp_path / "torch" / "install" / "bin" / "luarocks"
    result = run(name="hello", executable=str(exe))
    assert result["failed"] is True
    assert f"luarocks executable {exe} does not exist" in result["msg"]
    assert "cmd" not in result


def role_play(**role_vars) -> list:
    return [
        {
            "hosts": "localhost",
            "gather_facts": False,
            "roles": [{"role": "rnn_bootstrap.char_rnn.luarocks", "vars": role_vars}],
        }
    ]


def host_results(data: dict) -> dict:
    """Task results by task name (without the "role : " prefix the callback adds)."""
    return {t["task"]["name"].split(" : ", 1)[-1]: t["hosts"]["localhost"] for t in data["plays"][0]["tasks"]}


def test_role_installs_rocks_idempotently(run, home, tmp_path, server):
    world = write_rock(tmp_path / "world-src", "world", "0.2-1")
    role_vars = {
        "luarocks_executable": LUAROCKS,
        "luarocks_tree": str(run.tree),
        "luarocks_server": str(server),
        "luarocks_only_server": True,
        "luarocks_rocks": ["hello"],
        "luarocks_torch_rocks": [],
        "luarocks_extra_rocks": [{"rockspec": str(world)}, {"name": "hello", "version": "1.0-1", "state": "absent"}],
    }
    first = run.playbook(role_play(**role_vars))
    stats = first["stats"]["localhost"]
    assert stats["failures"] == 0, json.dumps(first, indent=1)
    assert stats["changed"] >= 2
    assert installed(run.tree, "hello", home) == ["1.1-1"]
    assert installed(run.tree, "world", home) == ["0.2-1"]

    second = run.playbook(role_play(**role_vars))
    assert second["stats"]["localhost"]["changed"] == 0, json.dumps(second, indent=1)
    assert second["stats"]["localhost"]["failures"] == 0


def test_role_verifies_torch_rocks(run, home, tmp_path):
    built = write_rock(tmp_path / "torch-src", "torch", "scm-1")
    base = {
        "luarocks_executable": LUAROCKS,
        "luarocks_tree": str(run.tree),
        "luarocks_rocks": [],
        "luarocks_torch_rocks": ["torch", "nn"],
    }
    run(rockspec=str(built))
    data = run.playbook(role_play(**base))
    assert data["stats"]["localhost"]["failures"] == 1
    failed = host_results(data)["Fail when Torch7's rocks are missing"]
    assert "Torch7 rocks nn are not installed" in failed["msg"]
    assert installed(run.tree, "nn", home) == []

    ok = run.playbook(role_play(**{**base, "luarocks_torch_rocks": ["torch"]}))
    assert ok["stats"]["localhost"]["failures"] == 0
    assert ok["stats"]["localhost"]["changed"] == 0

    # With the default executable missing the role fails clearly instead of using /usr/bin/luarocks.
    no_exe = {k: v for k, v in base.items() if k != "luarocks_executable"}
    missing = run.playbook(role_play(**no_exe, torch7_prefix=str(tmp_path / "no-torch")))
    results = host_results(missing)
    msg = results["Check the rocks Torch7's installer provides"]["msg"]
    assert f"luarocks executable {tmp_path}/no-torch/bin/luarocks does not exist" in msg
