"""Unit tests for the luarocks module: decision logic driven by a fake luarocks runner."""

from __future__ import annotations

import pytest
from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils import luarocks as lr_utils
from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils.luarocks import (
    LuaRocks,
    LuaRocksError,
    compare_versions,
    ensure,
    parse_list_porcelain,
    parse_rockspec,
    parse_search_porcelain,
    version_matches,
)
from ansible_collections.rnn_bootstrap.char_rnn.plugins.modules import luarocks as lr_module

EXE = "/opt/torch/install/bin/luarocks"


def listing(*rocks):
    """Porcelain `luarocks list` output for (name, version) pairs."""
    return "".join(f"{n}\t{v}\tinstalled\t/opt/torch/install/lib/luarocks/rocks\n" for n, v in rocks)


def search(*entries):
    return "".join(f"{n}\t{v}\t{a}\thttps://rocks.example\n" for n, v, a in entries)


class FakeRunner:
    """Answers luarocks argv (without the executable) from a table; records every call.

    A value may be a list of answers, consumed in order (e.g. `list` before and after an
    install). An answer is ``stdout`` or ``(rc, stdout, stderr)``.
    """

    def __init__(self, table):
        self.table = {k: list(v) if isinstance(v, list) else [v] for k, v in table.items()}
        self.calls = []

    def __call__(self, argv, cwd=None):
        assert argv[0] == EXE
        key = tuple(argv[1:])
        self.calls.append((key, cwd))
        if key not in self.table:
            raise AssertionError(f"unexpected luarocks call {key!r}")
        answers = self.table[key]
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(answer, tuple):
            return answer
        return 0, answer, ""

    @property
    def verbs(self):
        return [next(a for a in call[0] if not a.startswith("--")) for call in self.calls]


def params(**kw):
    base = dict(name=None, state="present", version=None, rockspec=None, chdir=None, force=False)
    base.update(kw)
    return base


LIST_H = ("list", "--porcelain", "hello")
SEARCH_H = ("search", "--porcelain", "hello")

# ---------------------------------------------------------------------------- parsing


def test_parse_list_porcelain_real_debian_output_and_exact_name():
    # Shape of Debian 12 luarocks 3.8 output; `list hello` also matches hello-extra.
    out = (
        "hello\t1.0-1\tinstalled\t/tmp/t/lib/luarocks/rocks-5.1\n"
        "hello\t1.1-1\tinstalled\t/tmp/t/lib/luarocks/rocks-5.1\n"
        "hello-extra\t2.0-1\tinstalled\t/tmp/t/lib/luarocks/rocks-5.1\n"
        "\n"
    )
    rocks = parse_list_porcelain(out, "hello")
    assert [r["version"] for r in rocks] == ["1.0-1", "1.1-1"]
    assert rocks[0] == {
        "name": "hello",
        "version": "1.0-1",
        "status": "installed",
        "tree": "/tmp/t/lib/luarocks/rocks-5.1",
    }
    assert len(parse_list_porcelain(out)) == 3
    assert parse_list_porcelain("") == []


def test_parse_search_porcelain():
    out = search(("hello", "1.1-1", "rockspec"), ("hello", "1.0-1", "all"), ("hello2", "9.0-1", "src"))
    found = parse_search_porcelain(out, "hello")
    assert [(e["version"], e["arch"]) for e in found] == [("1.1-1", "rockspec"), ("1.0-1", "all")]
    assert parse_search_porcelain("garbage line\n", "hello") == []


@pytest.mark.parametrize(
    ("older_or_newer", "other", "expected"),
    [
        ("1.0-1", "1.0-1", 0),
        ("1.0-1", "1.0-2", -1),
        ("1.10-1", "1.9-1", 1),
        ("2.1.0-1", "2.1-1", 0),
        ("1.0", "1.0-3", 0),
        ("scm-1", "99.0-1", 1),
        ("dev-1", "scm-1", 1),
        ("1.0rc1-1", "1.0-1", -1),
        ("1.0beta-1", "1.0rc-1", -1),
        ("1.8.0-1", "1.7.0-5", 1),
    ],
)
def test_compare_versions_follows_luarocks(older_or_newer, other, expected):
    assert compare_versions(older_or_newer, other) == expected
    assert compare_versions(other, older_or_newer) == -expected


@pytest.mark.parametrize(
    ("installed", "wanted", "ok"),
    [
        ("1.0-1", "1.0-1", True),
        ("1.0-1", "1.0", True),
        ("1.0-2", "1.0-1", False),
        ("1.1-1", "1.0", False),
        ("scm-1", "scm", True),
    ],
)
def test_version_matches(installed, wanted, ok):
    assert version_matches(installed, wanted) is ok


@pytest.mark.parametrize(
    ("filename", "content", "expected"),
    [
        ("x.rockspec", 'package = "nngraph"\nversion = "scm-1"\nsource = { tag = "v1" }\n', ("nngraph", "scm-1")),
        ("x.rockspec", "package='a'\n  version = '1.2-3'\n", ("a", "1.2-3")),
        ("x.rockspec", "package = [[b]]\nversion = [[0.1-1]]\n", ("b", "0.1-1")),
        # Indented `version` inside a table after the real one: first top-level match wins.
        ("x.rockspec", 'package = "c"\nversion = "1.0-1"\nx = {\n  version = "9"\n}\n', ("c", "1.0-1")),
        ("lua-cjson-2.1.0-1.rockspec", "-- generated\nlocal p = 'lua-cjson'\n", ("lua-cjson", "2.1.0-1")),
    ],
)
def test_parse_rockspec(tmp_path, filename, content, expected):
    path = tmp_path / filename
    path.write_text(content)
    assert parse_rockspec(str(path)) == expected


def test_parse_rockspec_unparseable(tmp_path):
    path = tmp_path / "weird.rockspec"
    path.write_text("return {}\n")
    with pytest.raises(LuaRocksError, match="Cannot determine package and version"):
        parse_rockspec(str(path))


# ---------------------------------------------------------------------------- named rocks


@pytest.fixture
def fake_exe(tmp_path):
    """A luarocks executable that must never really run: the tests script its answers."""
    exe = tmp_path / "torch" / "bin" / "luarocks"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\nexit 99\n")
    exe.chmod(0o755)
    return str(exe)


CASE_FIELDS = {"id", "input", "check_mode", "commands", "output"}


def run_case(case, run_module, exe, substitute=lambda text: text):
    """Run one case of test_luarocks.yaml through the module (its fields are described there)."""
    assert set(case) <= CASE_FIELDS, f"unknown fields {set(case) - CASE_FIELDS}"

    def fill(value):
        if isinstance(value, str):
            return substitute(value)
        if isinstance(value, list):
            return [fill(v) for v in value]
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        return value

    case = fill(case)
    commands = []
    for command in case["commands"]:
        scripted = {"argv": [exe, *command["argv"]], "rc": command.get("rc", 0), "err": command.get("err", "")}
        if "cwd" in command:
            scripted["cwd"] = command["cwd"]
        if "listed" in command:
            scripted["out"] = listing(*(rock.split() for rock in command["listed"]))
        elif "found" in command:
            scripted["out"] = search(*(entry.split() for entry in command["found"]))
        else:
            scripted["out"] = command.get("out", "")
        commands.append(scripted)
    check_mode = case.get("check_mode", False)
    failed, result = run_module(
        lr_module.main, {**case["input"], "executable": exe, "_ansible_check_mode": check_mode}, commands=commands
    )
    assert not failed, result["msg"]
    for key, expected in case["output"].items():
        assert result[key] == expected, key
    assert len(result["cmd"]) == len(commands)
    assert bool(result["actions"]) is result["changed"]
    if check_mode:
        assert not {"install", "remove", "make"} & {argv for c in commands for argv in c["argv"]}
    return result


def test_named_rocks(case, run_module, fake_exe):
    result = run_case(case, run_module, fake_exe)
    assert result["name"] == ["hello"]


def test_multiple_names_each_decided():
    runner = FakeRunner(
        {
            ("list", "--porcelain", "luafilesystem"): listing(("luafilesystem", "1.8.0-1")),
            ("list", "--porcelain", "lua-cjson"): ["", listing(("lua-cjson", "2.1.0-1"))],
            ("install", "lua-cjson"): "",
        }
    )
    result = ensure(params(name=["luafilesystem", "lua-cjson"]), LuaRocks(runner, EXE), False)
    assert result["changed"] is True
    assert result["name"] == ["luafilesystem", "lua-cjson"]
    assert result["actions"] == [{"rock": "lua-cjson", "action": "install", "version": None}]
    assert runner.verbs == ["list", "list", "install", "list"]


def test_global_flags_tree_server_and_extra_args():
    calls = []

    def run(argv, cwd=None):
        calls.append(argv)
        return 0, "", ""

    lr = LuaRocks(run, EXE, tree="/t", server="/srv/rocks", only_server=True, extra_args=["--no-doc"])
    with pytest.raises(LuaRocksError):  # nothing listed after install
        ensure(params(name=["hello"]), lr, False)
    assert calls[0] == [EXE, "--tree=/t", "list", "--porcelain", "hello"]
    assert calls[1] == [EXE, "--tree=/t", "--only-server=/srv/rocks", "install", "hello", "--no-doc"]
    lr2 = LuaRocks(run, EXE, server="https://r.example")
    lr2.available("hello")
    assert calls[-1] == [EXE, "--server=https://r.example", "search", "--porcelain", "hello"]


def test_install_failure_reports_rock_and_tail():
    err = "\n".join(f"line {i}" for i in range(50)) + "\nError: Build error: Failed compiling object lfs.o\n"
    runner = FakeRunner(
        {
            ("list", "--porcelain", "luafilesystem"): listing(("luafilesystem", "1.8.0-1")),
            ("list", "--porcelain", "lua-cjson"): "",
            ("install", "lua-cjson"): (1, "some stdout", err),
        }
    )
    with pytest.raises(LuaRocksError) as info:
        ensure(params(name=["luafilesystem", "lua-cjson"]), LuaRocks(runner, EXE), False)
    exc = info.value
    assert "install failed for rock 'lua-cjson' (rc=1)" in exc.msg
    assert "Failed compiling object lfs.o" in exc.msg
    assert "line 0" not in exc.msg  # only the tail
    assert exc.details["rc"] == 1
    assert exc.details["rock"] == "lua-cjson"
    assert exc.details["stderr"] == err
    assert exc.details["stdout"] == "some stdout"
    assert exc.details["failed_cmd"] == f"{EXE} install lua-cjson"
    # What happened before the failure is still reported.
    assert exc.details["versions_before"] == {"luafilesystem": ["1.8.0-1"]}
    assert len(exc.details["cmd"]) == 3


def test_failure_uses_stdout_when_stderr_empty():
    runner = FakeRunner({LIST_H: "", ("install", "hello"): (2, "Error: boom on stdout\n", "")})
    with pytest.raises(LuaRocksError, match="boom on stdout"):
        ensure(params(name=["hello"]), LuaRocks(runner, EXE), False)


def test_install_success_but_not_listed_fails():
    runner = FakeRunner({LIST_H: "", ("install", "hello"): ""})
    with pytest.raises(LuaRocksError, match="does not show it afterwards"):
        ensure(params(name=["hello"]), LuaRocks(runner, EXE), False)


# ---------------------------------------------------------------------------- rockspec / make


@pytest.fixture
def rockspec(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    path = src / "hello-1.0-1.rockspec"
    path.write_text('package = "hello"\nversion = "1.0-1"\nbuild = { type = "builtin", modules = {} }\n')
    return str(path)


def test_rockspecs(case, run_module, fake_exe, rockspec):
    src = rockspec.rsplit("/", 1)[0]
    result = run_case(
        case, run_module, fake_exe, lambda text: text.replace("{rockspec}", rockspec).replace("{src}", src)
    )
    assert result["rockspec"] == {"path": rockspec, "package": "hello", "version": "1.0-1"}


def test_rockspec_chdir_and_name_check(rockspec, tmp_path):
    runner = FakeRunner({LIST_H: ["", listing(("hello", "1.0-1"))], ("make", rockspec): ""})
    ensure(params(rockspec=rockspec, chdir=str(tmp_path), name=["hello"]), LuaRocks(runner, EXE), False)
    assert runner.calls[1] == (("make", rockspec), str(tmp_path))
    with pytest.raises(LuaRocksError, match="does not match package 'hello'"):
        ensure(params(rockspec=rockspec, name=["other"]), LuaRocks(FakeRunner({}), EXE), False)


def test_rockspec_make_failure(rockspec):
    runner = FakeRunner({LIST_H: "", ("make", rockspec): (1, "", "Error: Build error: hello.lua: No such file\n")})
    with pytest.raises(LuaRocksError) as info:
        ensure(params(rockspec=rockspec), LuaRocks(runner, EXE), False)
    assert "luarocks make failed for rock 'hello (" in info.value.msg
    assert "No such file" in info.value.msg


def test_rockspec_missing_file(tmp_path):
    with pytest.raises(LuaRocksError, match="does not exist"):
        ensure(params(rockspec=str(tmp_path / "nope-1.0-1.rockspec")), LuaRocks(FakeRunner({}), EXE), False)


def test_make_success_but_version_not_listed(rockspec):
    runner = FakeRunner({LIST_H: "", ("make", rockspec): ""})
    with pytest.raises(LuaRocksError, match=r"version 1\.0-1 is not listed"):
        ensure(params(rockspec=rockspec), LuaRocks(runner, EXE), False)


# ---------------------------------------------------------------------------- the module entry point


def test_missing_executable_fails_without_path_fallback(tmp_path, run_module):
    exe = str(tmp_path / "bin" / "luarocks")
    failed, result = run_module(lr_module.main, {"name": "lua-cjson", "executable": exe}, commands=[])
    assert failed
    assert f"luarocks executable {exe} does not exist" in result["msg"]
    assert "does not fall back to a luarocks on PATH" in result["msg"]


def test_default_executable_is_torchs():
    spec = lr_module.argument_spec()
    assert spec["executable"]["default"] == "/opt/torch/install/bin/luarocks"


def test_non_executable_file_fails(tmp_path, run_module):
    exe = tmp_path / "luarocks"
    exe.write_text("#!/bin/sh\n")
    failed, result = run_module(lr_module.main, {"name": "x", "executable": str(exe)}, commands=[])
    assert failed and "is not an executable file" in result["msg"]


def test_invalid_combinations(case, run_module):
    """What the argument spec (RULES) and validate() refuse: the message names the options."""
    failed, result = run_module(lr_module.main, case["input"], commands=[])
    assert failed
    assert case["msg"] in result["msg"]


def test_main_runs_argv_lists_with_env_and_path(fake_exe, run_module):
    seen = []

    def run_command(argv, cwd=None, environ_update=None, check_rc=False, **kw):
        seen.append((argv, environ_update))
        return 0, listing(("lua-cjson", "2.1.0-1")), ""

    failed, result = run_module(
        lr_module.main,
        {"name": "lua-cjson", "executable": fake_exe, "tree": "/t", "env": {"CMAKE_BUILD_TYPE": "Release"}},
        run_command=run_command,
    )
    assert not failed
    assert result["changed"] is False
    argv, env = seen[0]
    assert isinstance(argv, list)
    assert argv == [fake_exe, "--tree=/t", "list", "--porcelain", "lua-cjson"]
    assert env["CMAKE_BUILD_TYPE"] == "Release"
    assert env["PATH"].split(":")[0] == fake_exe.rsplit("/", 1)[0]
    assert env["LC_ALL"] == "C"


def test_main_failure_is_fail_json(fake_exe, run_module):
    failed, result = run_module(
        lr_module.main,
        {"name": "nosuch", "executable": fake_exe},
        commands=[
            {"argv": [fake_exe, "list", "--porcelain", "nosuch"]},
            {"argv": [fake_exe, "install", "nosuch"], "rc": 1, "err": "Error: No results matching query were found.\n"},
        ],
    )
    assert failed
    assert result["msg"].startswith("luarocks install failed for rock 'nosuch' (rc=1)")
    assert "No results matching query" in result["msg"]
    assert result["rc"] == 1


def test_module_code_parses_as_python38():
    # Target hosts may run Python 3.8: no match statements, parenthesized context managers, ...
    import ast

    for mod in (lr_utils, lr_module):
        with open(mod.__file__, encoding="utf-8") as fh:
            ast.parse(fh.read(), feature_version=(3, 8))


def test_documentation_matches_argument_spec():
    """A light validate-modules: documented options equal the argument_spec (type, default, choices)."""
    import yaml

    doc = yaml.safe_load(lr_module.DOCUMENTATION)
    yaml.safe_load(lr_module.EXAMPLES)
    yaml.safe_load(lr_module.RETURN)
    spec = lr_module.argument_spec()
    assert set(doc["options"]) == set(spec)
    for name, opt in doc["options"].items():
        arg = spec[name]
        assert opt["type"] == arg["type"], name
        assert opt.get("default") == arg.get("default"), name
        assert opt.get("choices") == arg.get("choices"), name
        assert opt.get("aliases") == arg.get("aliases"), name
        assert opt.get("elements") == arg.get("elements"), name
    # the rules name options of the spec
    rules = lr_module.RULES
    named = {n for group in rules["required_one_of"] + rules["mutually_exclusive"] for n in group}
    named |= set(rules["required_by"]) | set(rules["required_by"].values())
    assert named <= set(spec)
