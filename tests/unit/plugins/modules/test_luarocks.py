"""Unit tests for the luarocks module: decision logic driven by a fake luarocks runner."""

from __future__ import annotations

import json
from unittest import mock

import pytest
from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args
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


def hello(*versions):
    """Porcelain `luarocks list` output for rock `hello` at the given versions."""
    return listing(*(("hello", v) for v in versions))


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

    def argvs(self):
        return [call[0] for call in self.calls]


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

NAMED_CASES = [
    # id, params, check_mode, table, expected calls, changed, before, after
    (
        "present-installs-missing",
        params(name=["hello"]),
        False,
        {LIST_H: ["", listing(("hello", "1.1-1"))], ("install", "hello"): "ok"},
        [LIST_H, ("install", "hello"), LIST_H],
        True,
        [],
        ["1.1-1"],
    ),
    (
        "present-already-installed",
        params(name=["hello"]),
        False,
        {LIST_H: listing(("hello", "1.0-1"))},
        [LIST_H],
        False,
        ["1.0-1"],
        ["1.0-1"],
    ),
    (
        "present-substring-neighbour-does-not-count",
        params(name=["hello"]),
        False,
        {LIST_H: [listing(("hello-extra", "1.0-1")), listing(("hello", "1.0-1"))], ("install", "hello"): "ok"},
        [LIST_H, ("install", "hello"), LIST_H],
        True,
        [],
        ["1.0-1"],
    ),
    (
        "present-version-without-revision-matches",
        params(name=["hello"], version="1.0"),
        False,
        {LIST_H: listing(("hello", "1.0-1"))},
        [LIST_H],
        False,
        ["1.0-1"],
        ["1.0-1"],
    ),
    (
        "present-other-version-installs-pinned",
        params(name=["hello"], version="1.1-1"),
        False,
        {LIST_H: [listing(("hello", "1.0-1")), listing(("hello", "1.1-1"))], ("install", "hello", "1.1-1"): "ok"},
        [LIST_H, ("install", "hello", "1.1-1"), LIST_H],
        True,
        ["1.0-1"],
        ["1.1-1"],
    ),
    (
        "present-force-reinstalls",
        params(name=["hello"], force=True),
        False,
        {LIST_H: listing(("hello", "1.0-1")), ("install", "hello"): "ok"},
        [LIST_H, ("install", "hello"), LIST_H],
        True,
        ["1.0-1"],
        ["1.0-1"],
    ),
    (
        "absent-removes-all-versions",
        params(name=["hello"], state="absent"),
        False,
        {LIST_H: [listing(("hello", "1.0-1"), ("hello", "1.1-1")), ""], ("remove", "hello"): "ok"},
        [LIST_H, ("remove", "hello"), LIST_H],
        True,
        ["1.0-1", "1.1-1"],
        [],
    ),
    (
        "absent-version-removes-only-that-one",
        params(name=["hello"], state="absent", version="1.0"),
        False,
        {
            LIST_H: [listing(("hello", "1.0-1"), ("hello", "1.1-1")), listing(("hello", "1.1-1"))],
            ("remove", "hello", "1.0-1"): "ok",
        },
        [LIST_H, ("remove", "hello", "1.0-1"), LIST_H],
        True,
        ["1.0-1", "1.1-1"],
        ["1.1-1"],
    ),
    (
        "absent-force-passes-force",
        params(name=["hello"], state="absent", force=True),
        False,
        {LIST_H: [listing(("hello", "1.0-1")), ""], ("remove", "--force", "hello"): "ok"},
        [LIST_H, ("remove", "--force", "hello"), LIST_H],
        True,
        ["1.0-1"],
        [],
    ),
    (
        "absent-not-installed-is-ok",
        params(name=["hello"], state="absent"),
        False,
        {LIST_H: ""},
        [LIST_H],
        False,
        [],
        [],
    ),
    (
        "latest-upgrades",
        params(name=["hello"], state="latest"),
        False,
        {
            LIST_H: [listing(("hello", "1.0-1")), listing(("hello", "1.10-1"))],
            SEARCH_H: search(("hello", "1.9-1", "all"), ("hello", "1.10-1", "rockspec"), ("hello", "1.0-1", "all")),
            ("install", "hello"): "ok",
        },
        [LIST_H, SEARCH_H, ("install", "hello"), LIST_H],
        True,
        ["1.0-1"],
        ["1.10-1"],
    ),
    (
        "latest-up-to-date",
        params(name=["hello"], state="latest"),
        False,
        {LIST_H: listing(("hello", "1.1-1")), SEARCH_H: search(("hello", "1.1-1", "all"), ("hello", "1.0-1", "all"))},
        [LIST_H, SEARCH_H],
        False,
        ["1.1-1"],
        ["1.1-1"],
    ),
    (
        "latest-newer-installed-than-server-is-ok",
        params(name=["hello"], state="latest"),
        False,
        {LIST_H: listing(("hello", "scm-1")), SEARCH_H: search(("hello", "1.1-1", "all"))},
        [LIST_H, SEARCH_H],
        False,
        ["scm-1"],
        ["scm-1"],
    ),
    (
        "latest-installs-missing",
        params(name=["hello"], state="latest"),
        False,
        {
            LIST_H: ["", listing(("hello", "1.1-1"))],
            SEARCH_H: search(("hello", "1.1-1", "all")),
            ("install", "hello"): "",
        },
        [LIST_H, SEARCH_H, ("install", "hello"), LIST_H],
        True,
        [],
        ["1.1-1"],
    ),
    # Check mode: only list/search run.
    (
        "check-present-missing",
        params(name=["hello"]),
        True,
        {LIST_H: ""},
        [LIST_H],
        True,
        [],
        ["(unknown)"],
    ),
    (
        "check-present-pinned",
        params(name=["hello"], version="1.0-1"),
        True,
        {LIST_H: ""},
        [LIST_H],
        True,
        [],
        ["1.0-1"],
    ),
    (
        "check-absent",
        params(name=["hello"], state="absent"),
        True,
        {LIST_H: listing(("hello", "1.0-1"))},
        [LIST_H],
        True,
        ["1.0-1"],
        [],
    ),
    (
        "check-latest",
        params(name=["hello"], state="latest"),
        True,
        {LIST_H: listing(("hello", "1.0-1")), SEARCH_H: search(("hello", "1.1-1", "all"))},
        [LIST_H, SEARCH_H],
        True,
        ["1.0-1"],
        ["1.1-1"],
    ),
    (
        "check-present-installed",
        params(name=["hello"]),
        True,
        {LIST_H: listing(("hello", "1.0-1"))},
        [LIST_H],
        False,
        ["1.0-1"],
        ["1.0-1"],
    ),
]


@pytest.mark.parametrize(
    ("p", "check_mode", "table", "calls", "changed", "before", "after"),
    [c[1:] for c in NAMED_CASES],
    ids=[c[0] for c in NAMED_CASES],
)
def test_named_rock_decisions(p, check_mode, table, calls, changed, before, after):
    runner = FakeRunner(table)
    lr = LuaRocks(runner, EXE)
    result = ensure(p, lr, check_mode)
    assert runner.argvs() == calls
    assert result["changed"] is changed
    assert result["name"] == ["hello"]
    assert result["versions_before"] == {"hello": before}
    assert result["versions_after"] == {"hello": after}
    assert len(result["cmd"]) == len(calls)
    assert bool(result["actions"]) is changed
    if check_mode:
        assert not {"install", "remove", "make"} & set(runner.verbs)


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


MAKE_CASES = [
    # id, state, force, check_mode, list answers, expect_make, expect_remove, changed
    ("make-missing", "present", False, False, ["", hello("1.0-1")], True, None, True),
    ("make-same-version-ok", "present", False, False, [hello("1.0-1")], False, None, False),
    ("make-other-version", "present", False, False, [hello("0.9-1"), hello("1.0-1")], True, None, True),
    ("make-force", "present", True, False, [hello("1.0-1")], True, None, True),
    ("make-check-missing", "present", False, True, [""], False, None, True),
    ("make-check-force", "present", True, True, [hello("1.0-1")], False, None, True),
    ("absent-rockspec-ver", "absent", False, False, [hello("1.0-1", "2.0-1"), hello("2.0-1")], False, "1.0-1", True),
    ("absent-rockspec-other-version", "absent", False, False, [hello("2.0-1")], False, None, False),
    ("absent-rockspec-check", "absent", False, True, [hello("1.0-1")], False, None, True),
]  # fmt: skip


@pytest.mark.parametrize(
    ("state", "force", "check_mode", "lists", "expect_make", "expect_remove", "changed"),
    [c[1:] for c in MAKE_CASES],
    ids=[c[0] for c in MAKE_CASES],
)
def test_rockspec_decisions(rockspec, state, force, check_mode, lists, expect_make, expect_remove, changed):
    table = {LIST_H: lists, ("make", rockspec): "built", ("remove", "hello", "1.0-1"): "removed"}
    runner = FakeRunner(table)
    result = ensure(params(rockspec=rockspec, state=state, force=force), LuaRocks(runner, EXE), check_mode)
    assert result["changed"] is changed
    assert result["rockspec"] == {"path": rockspec, "package": "hello", "version": "1.0-1"}
    make_calls = [(k, cwd) for k, cwd in runner.calls if "make" in k]
    if expect_make:
        assert make_calls == [(("make", rockspec), rockspec.rsplit("/", 1)[0])]
    else:
        assert make_calls == []
    removes = [k for k in runner.argvs() if "remove" in k]
    assert removes == ([("remove", "hello", expect_remove)] if expect_remove else [])
    if check_mode:
        assert runner.verbs == ["list"]


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


class ModuleExit(Exception):
    def __init__(self, result, failed):
        super().__init__(result)
        self.result = result
        self.failed = failed


def run_main(args, run_command=None):
    def exit_json(self, **kw):
        raise ModuleExit(kw, False)

    def fail_json(self, msg, **kw):
        raise ModuleExit(dict(kw, msg=msg), True)

    with (
        patch_module_args(args),
        mock.patch.object(basic.AnsibleModule, "exit_json", exit_json),
        mock.patch.object(basic.AnsibleModule, "fail_json", fail_json),
        mock.patch.object(basic.AnsibleModule, "run_command", run_command or mock.Mock(side_effect=AssertionError)),
        pytest.raises(ModuleExit) as info,
    ):
        lr_module.main()
    return info.value


def test_missing_executable_fails_without_path_fallback(tmp_path):
    exe = str(tmp_path / "bin" / "luarocks")
    run_command = mock.Mock(side_effect=AssertionError("must not run anything"))
    out = run_main({"name": "lua-cjson", "executable": exe}, run_command)
    assert out.failed
    assert f"luarocks executable {exe} does not exist" in out.result["msg"]
    assert "does not fall back to a luarocks on PATH" in out.result["msg"]
    run_command.assert_not_called()


def test_default_executable_is_torchs():
    spec = lr_module.argument_spec()
    assert spec["executable"]["default"] == "/opt/torch/install/bin/luarocks"


def test_non_executable_file_fails(tmp_path):
    exe = tmp_path / "luarocks"
    exe.write_text("#!/bin/sh\n")
    out = run_main({"name": "x", "executable": str(exe)})
    assert out.failed and "is not an executable file" in out.result["msg"]


@pytest.mark.parametrize(
    ("args", "msg"),
    [
        ({}, "one of name or rockspec is required"),
        ({"name": "a", "state": "latest", "version": "1.0"}, "version cannot be used with state=latest"),
        ({"name": ["a", "b"], "version": "1.0"}, "version can only be used with a single name"),
        ({"rockspec": "/x-1.0-1.rockspec", "version": "1.0"}, "version cannot be used with rockspec"),
        ({"rockspec": "/x-1.0-1.rockspec", "state": "latest"}, "state=latest is not supported with rockspec"),
        ({"name": "a", "chdir": "/tmp"}, "chdir is only used with rockspec"),
        ({"name": "a", "executable": "luarocks"}, "executable must be an absolute path"),
    ],
)
def test_invalid_combinations(args, msg):
    out = run_main(args)
    assert out.failed
    assert msg in out.result["msg"]


@pytest.fixture
def fake_exe(tmp_path):
    exe = tmp_path / "torch" / "bin" / "luarocks"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\nexit 99\n")
    exe.chmod(0o755)
    return str(exe)


def test_main_runs_argv_lists_with_env_and_path(fake_exe):
    seen = []

    def run_command(self, argv, cwd=None, environ_update=None, check_rc=False, **kw):
        seen.append((argv, environ_update))
        return 0, listing(("lua-cjson", "2.1.0-1")), ""

    out = run_main(
        {"name": "lua-cjson", "executable": fake_exe, "tree": "/t", "env": {"CMAKE_BUILD_TYPE": "Release"}},
        run_command,
    )
    assert not out.failed
    assert out.result["changed"] is False
    argv, env = seen[0]
    assert isinstance(argv, list)
    assert argv == [fake_exe, "--tree=/t", "list", "--porcelain", "lua-cjson"]
    assert env["CMAKE_BUILD_TYPE"] == "Release"
    assert env["PATH"].split(":")[0] == fake_exe.rsplit("/", 1)[0]
    assert env["LC_ALL"] == "C"
    json.dumps(out.result)


def test_main_check_mode_runs_no_install(fake_exe):
    seen = []

    def run_command(self, argv, **kw):
        seen.append(argv)
        return 0, "", ""

    out = run_main({"name": ["lua-cjson"], "executable": fake_exe, "_ansible_check_mode": True}, run_command)
    assert not out.failed and out.result["changed"] is True
    assert [a[1] for a in seen] == ["list"]


def test_main_failure_is_fail_json(fake_exe):
    def run_command(self, argv, **kw):
        if "install" in argv:
            return 1, "", "Error: No results matching query were found for Lua 5.1.\n"
        return 0, "", ""

    out = run_main({"name": "nosuch", "executable": fake_exe}, run_command)
    assert out.failed
    assert out.result["msg"].startswith("luarocks install failed for rock 'nosuch' (rc=1)")
    assert "No results matching query" in out.result["msg"]
    assert out.result["rc"] == 1


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
