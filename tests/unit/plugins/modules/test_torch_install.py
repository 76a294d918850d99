"""Unit tests for rnn_bootstrap.char_rnn.torch_install with a fake command runner.

Nothing is compiled here: the fake runner records every command and imitates what the build
steps leave in the prefix (luarocks, libTH.so, th).
"""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
import time

import pytest
from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.module_utils.testing import patch_module_args
from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils import blas
from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils import torch_artifact as ta
from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils import torch_catalog as catalog
from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils import torch_probes as probes
from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils import torch_steps as steps
from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils.torch_records import STATE_FILE
from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils.torch_runner import Runner, TorchError
from ansible_collections.rnn_bootstrap.char_rnn.plugins.modules import torch_install as mod

SHA_A = "0219027e6c4644a0ba5c5bf137c989a0a8c9e01b"
SHA_B = "1111111111111111111111111111111111111111"
CHAR_RNN_SET = [
    "luafilesystem",
    "penlight",
    "luaffi",
    "cwrap",
    "paths",
    "torch",
    "trepl",
    "sys",
    "xlua",
    "moses",
    "nn",
    "graph",
    "nngraph",
    "optim",
]
LDD_OPENBLAS = """\
\tlinux-vdso.so.1 (0x00007ffd5a9f2000)
\tlibopenblas.so.0 => /lib/x86_64-linux-gnu/libopenblas.so.0 (0x00007f0c1a000000)
\tlibm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x00007f0c19f00000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0c19d00000)
"""
LDD_NO_BLAS = """\
\tlinux-vdso.so.1 (0x00007ffd5a9f2000)
\tlibm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x00007f0c19f00000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0c19d00000)
"""


class FakeRunner(Runner):
    """Records commands; build steps 'install' files into the prefix like the real ones."""

    def __init__(self, prefix, commit=SHA_A, cmake_version="3.25.1", ldd=LDD_OPENBLAS, nvcc=None, cpus=4):
        self.prefix = prefix
        self.commit = commit
        self.cmake_versions = {"/usr/bin/cmake": cmake_version}
        self.ldd = ldd
        self.nvcc = nvcc
        self.cpus = cpus
        self.require_ok = True
        self.require_ok_after_build = True  # a rebuild repairs a broken install
        self.th_exit_rc = 0
        self.fail_on = None
        self.calls = []

    # build steps
    def run(self, argv, cwd, env, log_path):
        self.calls.append(("run", list(argv), cwd, env))
        line = " ".join(argv)
        with open(log_path, "a") as log:
            log.write(f"fake output of {line}\n")
            if self.fail_on and self.fail_on in line:
                log.write("error: the compiler said no\n")
                return 2
        if any(arg.startswith("-DWITH_") for arg in argv):
            self.require_ok = self.require_ok_after_build
        if argv[-2:] == ["--target", "install"] and cwd.endswith("build"):
            self._touch("bin/luarocks", exe=True)
            self._touch("bin/luajit", exe=True)
        if argv[1:2] == ["make"] and "torch-scm-1" in argv[2]:
            self._touch("lib/libTH.so.0")
        if argv[1:2] == ["make"] and "trepl" in argv[2]:
            self._touch("bin/th", exe=True)
        return 0

    def _touch(self, rel, exe=False):
        path = os.path.join(self.prefix, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as handle:
            handle.write("fake\n")
        if exe:
            os.chmod(path, 0o755)

    # probes
    def capture(self, argv, cwd=None, env=None, timeout=600):
        self.calls.append(("capture", list(argv), cwd, env))
        if argv[0] == "git":
            return 0, self.commit + "\n"
        if argv[-1] == "--version":
            version = self.cmake_versions.get(argv[0])
            if version is None:
                return 127, "no such file"
            return 0, f"cmake version {version}\n\nCMake suite maintained and supported by Kitware.\n"
        if argv[0] == "ldd":
            return 0, self.ldd
        if argv[1:2] == ["-e"]:
            if self.require_ok:
                return self.th_exit_rc, probes.REQUIRE_MARKER + "\n"
            return 0, "...module 'nngraph' not found:\n\tno field package.preload['nngraph']\n"
        if argv[-1] == "path":
            lua = f"{self.prefix}/share/lua/5.1/?.lua;;"
            lib = f"{self.prefix}/lib/lua/5.1/?.so;;"
            return 0, f"export LUA_PATH='{lua}'\nexport LUA_CPATH='{lib}'\n"
        raise AssertionError(f"unexpected probe {argv!r}")

    def which(self, name, path=None):
        return {"cmake": "/usr/bin/cmake", "nvcc": self.nvcc}.get(name)

    def is_executable(self, path):
        if path in probes.NVCC_CANDIDATES:
            return False
        return super().is_executable(path)

    def cpu_count(self):
        return self.cpus

    # helpers for assertions
    def steps(self):
        return [call for call in self.calls if call[0] == "run"]

    def step_lines(self):
        return [" ".join(call[1]) for call in self.steps()]


def make_src(root, cuda_cmake=False):
    """A torch/distro-shaped tree with every catalog rockspec (contents irrelevant here)."""
    src = root / "distro"
    (src / "exe" / "luajit-rocks").mkdir(parents=True)
    (src / "exe" / "luajit-rocks" / "CMakeLists.txt").write_text("# fake\n")
    for _name, subdir, rockspec, _deps, _cuda in catalog.CATALOG:
        path = src / subdir / rockspec
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("-- fake\n")
    if cuda_cmake:
        (src / "cmake" / "3.6").mkdir(parents=True)
    return src


def params(tmp_path, src, **over):
    p = ArgumentSpecValidator(mod.ARGUMENT_SPEC, required_by=mod.REQUIRED_BY).validate({}).validated_parameters
    p.update(
        src=str(src),
        prefix=str(tmp_path / "install"),
        log_path=str(tmp_path / "log" / "torch-build.log"),
    )
    p.update(over)
    return p


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    src = make_src(tmp_path)
    runner = FakeRunner(str(tmp_path / "install"))
    return tmp_path, src, runner


# --------------------------------------------------------------------------- arguments


def test_arguments(case):
    result = ArgumentSpecValidator(mod.ARGUMENT_SPEC, required_by=mod.REQUIRED_BY).validate(case["given"])
    assert not result.error_messages
    assert result.validated_parameters[case["key"]] == case["expected"]


def test_arguments_rejected(case):
    assert ArgumentSpecValidator(mod.ARGUMENT_SPEC, required_by=mod.REQUIRED_BY).validate(case["given"]).error_messages


# --------------------------------------------------------------------------- planning


def test_resolve_packages(case):
    assert catalog.resolve_packages(case["wanted"], case["cuda"]) == case["expected"]


def test_char_rnn_set_is_what_char_rnn_needs():
    assert catalog.packages_for([], False) == CHAR_RNN_SET
    assert set(catalog.CHAR_RNN_PACKAGES) <= set(CHAR_RNN_SET)


def test_resolve_packages_rejects(case):
    with pytest.raises(TorchError) as caught:
        catalog.resolve_packages(case["wanted"], case["cuda"])
    assert caught.value.step == "plan"


def test_catalog_is_in_dependency_order():
    seen = set()
    for name, _subdir, _rockspec, deps, _cuda in catalog.CATALOG:
        assert set(deps) <= seen, name
        seen.add(name)


# --------------------------------------------------------------------------- first build


def test_fresh_build_runs_steps_in_order_and_records(env):
    tmp_path, src, runner = env
    ok, res, _warnings = mod.run(params(tmp_path, src), False, runner)
    assert ok, res
    assert res["changed"] and res["built"]
    assert res["reason"] == "no build record"
    assert res["packages"] == CHAR_RNN_SET
    assert res["commit"] == SHA_A
    lines = runner.step_lines()
    assert lines[0].startswith(f"/usr/bin/cmake {src}/exe/luajit-rocks ")
    assert "-DWITH_LUAJIT21=ON" in lines[0]
    assert "-DCMAKE_INSTALL_PREFIX=%s" % (tmp_path / "install") in lines[0]
    assert lines[1] == "/usr/bin/cmake --build . -- -j4"
    assert lines[2] == "/usr/bin/cmake --build . --target install"
    rocks = [call[1][2] for call in runner.steps()[3:]]
    assert rocks == [dict((e[0], e[2]) for e in catalog.CATALOG)[name] for name in CHAR_RNN_SET]
    assert all(call[1][0] == str(tmp_path / "install" / "bin" / "luarocks") for call in runner.steps()[3:])
    # packages are built from copies, the checkout stays clean
    assert runner.steps()[3][2] == str(src / "build" / "pkgs" / "extra" / "luafilesystem")
    assert (src / "build" / "pkgs" / "pkg" / "torch" / "rocks" / "torch-scm-1.rockspec").exists()
    # parallel: luarocks' cmake/make builds get the job count from the environment
    step_env = runner.steps()[-1][3]
    assert step_env["MAKEFLAGS"] == "-j4" and step_env["CMAKE_BUILD_PARALLEL_LEVEL"] == "4"
    assert step_env["LUA_PATH"].startswith(str(tmp_path / "install"))
    assert step_env["PATH"].split(os.pathsep)[0] == str(src / "build" / ".toolchain")
    # record
    state = json.loads((tmp_path / "install" / STATE_FILE).read_text())
    assert state["commit"] == SHA_A and state["lua_flavour"] == "LUAJIT21" and state["cuda"] is False
    assert state["blas_library"] == os.path.realpath("/lib/x86_64-linux-gnu/libopenblas.so.0")
    assert res["ansible_facts"]["torch_install"]["th"] == str(tmp_path / "install" / "bin" / "th")
    # log has every step
    log = (tmp_path / "log" / "torch-build.log").read_text()
    assert "==> [luarocks make nngraph]" in log and "<== [luarocks make optim] rc=0" in log


def test_build_path_drops_conda_like_install_sh(env, monkeypatch):
    tmp_path, src, runner = env
    monkeypatch.setenv("PATH", "/opt/anaconda3/bin:/usr/bin:/bin")
    assert mod.run(params(tmp_path, src), False, runner)[0]
    path = runner.steps()[-1][3]["PATH"].split(os.pathsep)
    assert "/opt/anaconda3/bin" not in path and path[-2:] == ["/usr/bin", "/bin"]


def test_activation_is_built_and_returned_and_no_rc_edits(env):
    """torch-activate is part of the build; its text is returned for the role's profile script; nothing
    is written outside the prefix, the build tree and the log (the role writes the profile script and th link)."""
    tmp_path, src, runner = env
    before = set(os.listdir(tmp_path))
    ok, res, _warnings = mod.run(params(tmp_path, src), False, runner)
    assert ok
    prefix = str(tmp_path / "install")
    activate = tmp_path / "install" / "bin" / "torch-activate"
    assert activate.read_text() == res["activation"]
    assert activate.stat().st_mode & 0o7777 == 0o755
    assert f'export PATH="{prefix}/bin${{PATH:+:$PATH}}"' in res["activation"]
    assert "LD_LIBRARY_PATH" in res["activation"] and "LUA_PATH" in res["activation"]
    assert res["activation"].startswith("# Managed by rnn_bootstrap.char_rnn.torch_install: Torch7 in ")
    assert set(os.listdir(tmp_path)) - before == {"install", "log"}
    assert os.listdir(tmp_path / "home") == []  # no .bashrc / .profile written
    # up to date: the same text, from the record
    ok, again, _warnings = mod.run(params(tmp_path, src), False, runner)
    assert ok and not again["changed"] and again["activation"] == res["activation"]


@pytest.fixture
def stdin_that_blocks():
    """fd 0 becomes a pipe nobody writes to or closes: a child that inherits it and reads waits forever."""
    read_end, write_end = os.pipe()
    saved = os.dup(0)
    os.dup2(read_end, 0)
    os.close(read_end)
    try:
        yield
    finally:
        os.dup2(saved, 0)
        os.close(saved)
        os.close(write_end)


# A prompt: reads one answer. `timeout` ends it if it waits (rc 124) so a failing test cannot hang.
PROMPT = ["timeout", "{}", "sh", "-c", 'if read -r answer; then echo "answer: $answer"; else echo "no answer"; fi']


def real_runner():
    """The module's own runner over a real AnsibleModule.run_command."""
    with patch_module_args({}):
        return Runner(AnsibleModule(argument_spec={}))


def test_build_steps_and_probes_never_wait_on_stdin(stdin_that_blocks, tmp_path):
    """A prompt in a build step or probe (install.sh asks before editing ~/.bashrc) ends at once."""
    prompt = [arg.replace("{}", "1") for arg in PROMPT]
    # the premise: with the module's stdin, a prompt would wait
    assert subprocess.run(prompt, stdout=subprocess.PIPE, check=False).returncode == 124
    prompt = [arg.replace("{}", "20") for arg in PROMPT]
    runner = real_runner()
    started = time.monotonic()
    assert runner.capture(prompt) == (0, "no answer\n")
    log = tmp_path / "step.log"
    log.write_text("==> [step]\n")
    assert runner.run(prompt, str(tmp_path), {"PATH": os.environ["PATH"]}, str(log)) == 0
    assert log.read_text() == "==> [step]\nno answer\n"  # appended to the log, stdout and stderr
    assert time.monotonic() - started < 10


def test_probe_that_hangs_is_ended_by_its_timeout():
    runner = real_runner()
    started = time.monotonic()
    assert runner.capture(["sleep", "30"], timeout=1) == (124, "timed out after 1 s")
    assert time.monotonic() - started < 10
    assert runner.capture(["/nonexistent/cmake", "--version"])[0] == 127


def test_build_step_gets_exactly_the_environment_it_is_given(tmp_path, monkeypatch):
    """run_command only adds to the module's environment; a name the build drops (MAKELEVEL) stays out."""
    monkeypatch.setenv("MAKELEVEL", "3")
    runner = real_runner()
    log = tmp_path / "env.log"
    env = {k: v for k, v in os.environ.items() if k != "MAKELEVEL"}
    env["MAKEFLAGS"] = "-j2"
    assert runner.run(["sh", "-c", 'echo "${MAKELEVEL:-unset} $MAKEFLAGS" >&2'], str(tmp_path), env, str(log)) == 0
    assert log.read_text() == "unset -j2\n"
    assert os.environ["MAKELEVEL"] == "3"


# --------------------------------------------------------------------------- rebuild decision


def _break_th(tmp_path, runner):
    os.unlink(tmp_path / "install" / "bin" / "th")


def _fail_require(tmp_path, runner):
    runner.require_ok = False


def _new_commit(tmp_path, runner):
    runner.commit = SHA_B


def _garble_state(tmp_path, runner):
    (tmp_path / "install" / STATE_FILE).write_text("{not json")


def _drop_libth(tmp_path, runner):
    os.unlink(tmp_path / "install" / "lib" / "libTH.so.0")


# The `mutate` of test_rebuild_decision's cases.
MUTATIONS = {
    "nothing": lambda tmp_path, runner: None,
    "break_th": _break_th,
    "fail_require": _fail_require,
    "new_commit": _new_commit,
    "garble_state": _garble_state,
    "drop_libth": _drop_libth,
}


def test_rebuild_decision(env, case):
    tmp_path, src, runner = env
    ok, _result, _warnings = mod.run(params(tmp_path, src), False, runner)
    assert ok
    MUTATIONS[case["mutate"]](tmp_path, runner)
    runner.calls.clear()
    ok, res, _warnings = mod.run(params(tmp_path, src, **case["over"]), False, runner)
    assert ok, res
    assert res["built"] is case["built"], res
    assert case["reason"] in res["reason"]
    assert bool(runner.steps()) is case["built"]
    if not case["built"]:
        assert res["changed"] is False
        assert res["build_seconds"] == 0.0


def test_no_blas_in_record_rebuilds_when_blas_required(env):
    tmp_path, src, runner = env
    runner.ldd = LDD_NO_BLAS
    ok, res, _warnings = mod.run(params(tmp_path, src, require_blas=False), False, runner)
    assert ok and res["blas_library"] is None
    ok, res, _warnings = mod.run(params(tmp_path, src, require_blas=False), False, runner)
    assert ok and not res["changed"]
    runner.ldd = LDD_OPENBLAS
    ok, res, _warnings = mod.run(params(tmp_path, src), False, runner)
    assert ok and res["built"] and "no BLAS" in res["reason"]
    assert res["blas_library"]


# --------------------------------------------------------------------------- check mode


def test_check_mode_fresh_runs_nothing(env):
    tmp_path, src, runner = env
    ok, res, _warnings = mod.run(params(tmp_path, src), True, runner)
    assert ok
    assert res["changed"] and res["built"] and res["reason"] == "no build record"
    assert runner.steps() == []
    assert not (tmp_path / "install").exists()
    assert not (tmp_path / "profile.d").exists()
    assert not (tmp_path / "log").exists()


def test_check_mode_up_to_date_and_changed_commit(env):
    tmp_path, src, runner = env
    assert mod.run(params(tmp_path, src), False, runner)[0]
    runner.calls.clear()
    ok, res, _warnings = mod.run(params(tmp_path, src), True, runner)
    assert ok and not res["changed"] and runner.steps() == []
    runner.commit = SHA_B
    ok, res, _warnings = mod.run(params(tmp_path, src), True, runner)
    assert ok and res["changed"] and "commit changed" in res["reason"] and runner.steps() == []
    assert json.loads((tmp_path / "install" / STATE_FILE).read_text())["commit"] == SHA_A


# --------------------------------------------------------------------------- failures


def test_failure_reports_step_and_log_tail(env, case):
    tmp_path, src, runner = env
    runner.fail_on = case["fail_on"]
    step = case["step"]
    ok, res, _warnings = mod.run(params(tmp_path, src), False, runner)
    assert not ok
    assert res["failed_step"] == step
    assert "error: the compiler said no" in res["log_tail"]
    assert f"<== [{step}] rc=2" in res["log_tail"]
    assert res["log_path"] in res["msg"]
    assert json.loads((tmp_path / "install" / STATE_FILE).read_text())["incomplete"] is True
    # the next run retries
    runner.fail_on = None
    ok, res, _warnings = mod.run(params(tmp_path, src), False, runner)
    assert ok and res["built"] and res["reason"] == "previous build did not finish"
    assert os.path.exists(str(tmp_path / "log" / "torch-build.log.1"))


def test_missing_submodules_fail_clearly(tmp_path):
    runner = FakeRunner(str(tmp_path / "install"))
    (tmp_path / "distro").mkdir()
    ok, res, _warnings = mod.run(params(tmp_path, tmp_path / "distro"), False, runner)
    assert not ok and res["failed_step"] == "locate sources" and "recursive" in res["msg"]


def test_missing_package_dir_fails_before_building(env):
    tmp_path, src, runner = env
    import shutil

    shutil.rmtree(src / "pkg" / "xlua")
    for check_mode in (True, False):
        ok, res, _warnings = mod.run(params(tmp_path, src), check_mode, runner)
        assert not ok and res["failed_step"] == "locate sources" and "xlua" in res["msg"]
    assert runner.steps() == []
    assert not (tmp_path / "install").exists()


def test_require_check_failure_after_build(env):
    tmp_path, src, runner = env
    runner.require_ok = runner.require_ok_after_build = False
    ok, res, _warnings = mod.run(params(tmp_path, src), False, runner)
    assert not ok and res["failed_step"] == "verify requires"
    assert "nngraph" in res["log_tail"]
    assert "commit" not in json.loads((tmp_path / "install" / STATE_FILE).read_text())


# --------------------------------------------------------------------------- toolchain


def test_cmake4_without_alternative_fails(env):
    tmp_path, src, runner = env
    runner.cmake_versions["/usr/bin/cmake"] = "4.1.2"
    ok, res, _warnings = mod.run(params(tmp_path, src), False, runner)
    assert not ok and res["failed_step"] == "toolchain"
    assert "4.1.2" in res["msg"] and "CMP0026" in res["msg"] and "cmake=" in res["msg"]
    assert runner.steps() == []


def test_cmake4_with_pinned_cmake3_builds_with_it(env):
    tmp_path, src, runner = env
    runner.cmake_versions["/usr/bin/cmake"] = "4.1.2"
    runner.cmake_versions["/opt/cmake3/bin/cmake"] = "3.31.6"
    ok, res, _warnings = mod.run(params(tmp_path, src, cmake="/opt/cmake3/bin/cmake"), False, runner)
    assert ok, res
    assert res["cmake"] == {"path": "/opt/cmake3/bin/cmake", "version": "3.31.6"}
    assert runner.step_lines()[0].startswith("/opt/cmake3/bin/cmake ")
    shim = src / "build" / ".toolchain" / "cmake"
    assert os.readlink(shim) == "/opt/cmake3/bin/cmake"
    assert runner.steps()[-1][3]["PATH"].split(os.pathsep)[0] == str(shim.parent)


def test_given_cmake4_is_refused(env):
    tmp_path, src, runner = env
    runner.cmake_versions["/opt/cmake4/bin/cmake"] = "4.0.0"
    ok, res, _warnings = mod.run(params(tmp_path, src, cmake="/opt/cmake4/bin/cmake"), False, runner)
    assert not ok and res["failed_step"] == "toolchain" and "needs CMake 3.x" in res["msg"]


def test_parse_cmake_version(case):
    version = probes.parse_cmake_version(case["text"])
    assert version == (tuple(case["version"]) if case["version"] else None)


# --------------------------------------------------------------------------- BLAS


def test_parse_ldd_blas(case):
    assert blas.parse_ldd_blas(case["ldd"]) == (case["soname"], case["resolved"])


def test_blas_verification(env, case):
    tmp_path, src, runner = env
    runner.ldd = case["ldd"]
    success, res, _warnings = mod.run(params(tmp_path, src, require_blas=case["require_blas"]), False, runner)
    assert success is case["ok"], res
    if case["ok"]:
        assert res["blas_library"] == (os.path.realpath(case["blas"]) if case["blas"] else None)
    else:
        assert res["failed_step"] == "verify blas"


# --------------------------------------------------------------------------- CUDA


def test_cuda_rocks_not_built_by_default_even_with_nvcc(env):
    tmp_path, src, runner = env
    runner.nvcc = "/usr/local/cuda/bin/nvcc"
    ok, res, _warnings = mod.run(params(tmp_path, src), False, runner)
    assert ok
    assert not any("cutorch" in line or "cunn" in line for line in runner.step_lines())
    assert "cutorch" not in res["packages"]


def test_cuda_rocks_when_asked(tmp_path):
    src = make_src(tmp_path, cuda_cmake=True)
    runner = FakeRunner(str(tmp_path / "install"), nvcc="/usr/local/cuda/bin/nvcc")
    ok, res, _warnings = mod.run(params(tmp_path, src, cuda=True), False, runner)
    assert ok, res
    assert res["packages"][-2:] == ["cutorch", "cunn"]
    names = [line for line in runner.step_lines() if "luarocks" in line]
    assert names[-2].endswith("rocks/cutorch-scm-1.rockspec") and names[-1].endswith("rocks/cunn-scm-1.rockspec")
    assert any(str(src / "cmake" / "3.6") in line for line in runner.step_lines())
    assert json.loads((tmp_path / "install" / STATE_FILE).read_text())["cuda"] is True


def test_cuda_without_nvcc_fails(env):
    tmp_path, src, runner = env
    ok, res, _warnings = mod.run(params(tmp_path, src, cuda=True), False, runner)
    assert not ok and res["failed_step"] == "toolchain" and "nvcc" in res["msg"]


def test_cuda_package_without_cuda_fails(env):
    tmp_path, src, runner = env
    ok, res, _warnings = mod.run(params(tmp_path, src, extra_packages=["cudnn"]), False, runner)
    assert not ok and res["failed_step"] == "plan"


# --------------------------------------------------------------------------- artifact seam


def test_export_then_install_artifact(env):
    tmp_path, src, runner = env
    artifact = tmp_path / "cache" / "torch.tar.gz"
    ok, res, _warnings = mod.run(params(tmp_path, src, export_artifact=str(artifact)), False, runner)
    assert ok and artifact.exists()
    with tarfile.open(artifact) as tar:
        assert "./" + STATE_FILE in tar.getnames()
    # a "new host": same prefix, no build, no source
    import shutil

    shutil.rmtree(tmp_path / "install")
    runner.calls.clear()
    p = params(tmp_path, tmp_path / "nowhere", artifact=str(artifact))
    ok, res, _warnings = mod.run(p, False, runner)
    assert ok and res["built"] and res["commit"] == SHA_A, res
    assert runner.steps() == []
    assert (tmp_path / "install" / "bin" / "th").exists()
    ok, res, _warnings = mod.run(p, False, runner)
    assert ok and not res["changed"] and "up to date" in res["reason"]


def test_artifact_for_another_prefix_is_refused(env):
    tmp_path, src, runner = env
    artifact = tmp_path / "torch.tar.gz"
    assert mod.run(params(tmp_path, src, export_artifact=str(artifact)), False, runner)[0]
    ok, res, _warnings = mod.run(
        params(tmp_path, src, artifact=str(artifact), prefix=str(tmp_path / "other")), False, runner
    )
    assert not ok and "not relocatable" in res["msg"]


def test_parse_luarocks_path_drops_the_builders_home_tree():
    text = (
        "export LUA_PATH='/root/.luarocks/share/lua/5.1/?.lua;/opt/t/share/lua/5.1/?.lua;./?.lua'\n"
        "export LUA_CPATH='/root/.luarocks/lib/lua/5.1/?.so;/opt/t/lib/lua/5.1/?.so'\n"
        "export PATH='/root/.luarocks/bin:/usr/bin'\n"
    )
    assert steps.parse_luarocks_path(text, home="/root") == {
        "LUA_PATH": "/opt/t/share/lua/5.1/?.lua;./?.lua",
        "LUA_CPATH": "/opt/t/lib/lua/5.1/?.so",
    }


def test_blas_library_is_resolved_live_when_up_to_date(env, tmp_path):
    tmp, src, runner = env
    assert mod.run(params(tmp, src), False, runner)[0]
    target = tmp_path / "openblas-openmp" / "libopenblas.so.0"
    target.parent.mkdir()
    target.write_text("")
    runner.ldd = f"\tlibopenblas.so.0 => {target} (0x1)\n"
    ok, res, _warnings = mod.run(params(tmp, src), False, runner)
    assert ok and not res["changed"]
    assert res["blas_library"] == str(target)
    assert res["state"]["blas_library"] != str(target)


def test_crash_at_exit_after_requires_is_a_warning(env):
    """Real LUA51 builds: th prints the marker, then luaffi segfaults in lua_close (rc -11)."""
    tmp_path, src, runner = env
    runner.th_exit_rc = -11
    ok, res, _warnings = mod.run(params(tmp_path, src, lua_flavour="LUA51"), False, runner)
    assert ok and res["built"], res
    assert len(_warnings) == 1 and "signal 11" in _warnings[0]
    ok, res, warnings = mod.run(params(tmp_path, src, lua_flavour="LUA51"), False, runner)
    assert ok and not res["changed"] and len(warnings) == 1 and "signal 11" in warnings[0]


# --------------------------------------------------------------------------- keyed artifacts (the store)

KEY = {
    "distribution": "debian",
    "release": "12",
    "glibc": "2.36",
    "arch": "x86_64",
    "commit": SHA_A,
    "lua_flavour": "LUAJIT21",
    "packages": CHAR_RNN_SET,
    "cuda": False,
    "cuda_version": None,
    "blas": "libopenblas.so.0:openmp",
}


def host_key(tmp_path, **over):
    return dict(KEY, prefix=str(tmp_path / "install"), **over)


def export_keyed(tmp_path, src, runner, key=None):
    key = key or host_key(tmp_path)
    tarball = tmp_path / "cache" / "torch7.tar.gz"
    ok, res, _warnings = mod.run(params(tmp_path, src, export_artifact=str(tarball), artifact_key=key), False, runner)
    assert ok, res
    return tarball, tmp_path / "cache" / "torch7.json", res


def new_host(tmp_path):
    """Another host of the same key: nothing installed yet."""
    import shutil

    shutil.rmtree(tmp_path / "install")


def install_params(tmp_path, tarball, key=None, **over):
    return params(tmp_path, tmp_path / "nowhere", artifact=str(tarball), artifact_key=key or host_key(tmp_path), **over)


def test_keyed_export_writes_manifest_with_key_and_checksum(env):
    tmp_path, src, runner = env
    tarball, manifest_path, res = export_keyed(tmp_path, src, runner)
    manifest = json.loads(manifest_path.read_text())
    key = host_key(tmp_path)
    assert manifest["key"] == key and manifest["key_id"] == ta.key_id(key)
    assert manifest["name"] == ta.artifact_name(key) == res["artifact"]["name"]
    assert manifest["sha256"] == ta.sha256_file(tarball) == res["artifact"]["sha256"]
    assert manifest["packages"] == CHAR_RNN_SET and manifest["built_on"]
    with tarfile.open(tarball) as tar:
        record = json.load(tar.extractfile("./" + STATE_FILE))
    assert record["artifact_key_id"] == ta.key_id(key) and record["source"] == "build"
    # a second run neither rebuilds nor re-exports
    ok, res, _warnings = mod.run(params(tmp_path, src, export_artifact=str(tarball), artifact_key=key), False, runner)
    assert ok and not res["changed"], res


def test_keyed_export_refuses_a_key_that_does_not_describe_the_build(env):
    tmp_path, src, runner = env
    ok, res, _warnings = mod.run(
        params(
            tmp_path,
            src,
            export_artifact=str(tmp_path / "t.tar.gz"),
            artifact_key=host_key(tmp_path, lua_flavour="LUA51"),
        ),
        False,
        runner,
    )
    assert not ok and res["failed_step"] == "export artifact" and "lua_flavour" in res["msg"]
    assert not (tmp_path / "t.tar.gz").exists()


def test_keyed_install_then_up_to_date_without_reading_the_tarball(env):
    tmp_path, src, runner = env
    tarball, _manifest, _res = export_keyed(tmp_path, src, runner)
    new_host(tmp_path)
    runner.calls.clear()
    ok, res, _warnings = mod.run(install_params(tmp_path, tarball), False, runner)
    assert ok and res["built"] and res["changed"], res
    assert runner.steps() == []
    record = json.loads((tmp_path / "install" / STATE_FILE).read_text())
    assert record["source"] == "artifact" and record["artifact_key_id"] == ta.key_id(host_key(tmp_path))
    tarball.unlink()  # a healthy install of the right key needs no tarball
    ok, res, _warnings = mod.run(install_params(tmp_path, tarball), False, runner)
    assert ok and not res["changed"] and "up to date" in res["reason"], res


def test_artifact_of_another_key_is_refused_showing_both_keys(env):
    tmp_path, src, runner = env
    tarball, _manifest, _res = export_keyed(tmp_path, src, runner)
    new_host(tmp_path)
    trixie = host_key(tmp_path, release="13", glibc="2.41")
    ok, res, _warnings = mod.run(install_params(tmp_path, tarball, key=trixie), False, runner)
    assert not ok and res["failed_step"] == "check artifact key"
    assert "release, glibc differ" in res["msg"]
    assert "release=13" in res["msg"] and "release=12" in res["msg"]
    assert not (tmp_path / "install").exists()


def test_corrupt_artifact_is_never_installed_and_the_old_prefix_stays(env):
    tmp_path, src, runner = env
    tarball, _manifest, _res = export_keyed(tmp_path, src, runner)
    before = (tmp_path / "install" / STATE_FILE).read_text()
    data = bytearray(tarball.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tarball.write_bytes(bytes(data))
    ok, res, _warnings = mod.run(install_params(tmp_path, tarball, force=True), False, runner)
    assert not ok and res["failed_step"] == "check artifact checksum" and "corrupt" in res["msg"]
    assert (tmp_path / "install" / STATE_FILE).read_text() == before


def test_artifact_that_fails_its_health_check_is_rolled_back(env):
    tmp_path, src, runner = env
    tarball, _manifest, _res = export_keyed(tmp_path, src, runner)
    before = (tmp_path / "install" / STATE_FILE).read_text()
    runner.require_ok = False
    ok, res, _warnings = mod.run(install_params(tmp_path, tarball, force=True), False, runner)
    assert not ok and res["failed_step"] == "verify requires"
    assert (tmp_path / "install" / STATE_FILE).read_text() == before
    assert not list(tmp_path.glob("install.rnn_bootstrap-*"))


def test_check_mode_install_before_the_download(env):
    tmp_path, _src, runner = env
    ok, res, _warnings = mod.run(install_params(tmp_path, tmp_path / "not-yet.tar.gz"), True, runner)
    assert ok and res["changed"] and res["built"] and "would install" in res["reason"], res
    assert not (tmp_path / "install").exists()


def test_build_reports_progress_for_a_play_that_follows_it(env):
    tmp_path, src, runner = env
    ok, _res, _warnings = mod.run(params(tmp_path, src), False, runner)
    progress = json.loads((tmp_path / "log" / "torch-build.log.progress.json").read_text())
    assert ok and progress["step"] == progress["steps"] == len(runner.steps())
    assert progress["name"] == "verify" and progress["finished"] is False


def test_main_runs_its_probes_through_run_command(tmp_path, run_module):
    """main() over AnsibleModule.run_command (scripted here): check mode on a fresh host reads the
    commit and the CMake version, and nothing else runs or is written."""
    src = make_src(tmp_path)
    cmake = str(tmp_path / "cmake3" / "bin" / "cmake")
    args = {
        "src": str(src),
        "prefix": str(tmp_path / "install"),
        "log_path": str(tmp_path / "log" / "torch-build.log"),
        "cmake": cmake,
        "_ansible_check_mode": True,
    }
    commands = [
        {"argv": ["git", "-c", "safe.directory=*", "-C", str(src), "rev-parse", "HEAD"], "out": SHA_A + "\n"},
        {"argv": [cmake, "--version"], "out": "cmake version 3.25.1\n"},
    ]
    failed, res = run_module(mod.main, args, commands=commands)
    assert not failed, res
    assert res["changed"] and res["built"] and res["reason"] == "no build record"
    assert res["cmake"] == {"path": cmake, "version": "3.25.1"}
    assert not (tmp_path / "install").exists() and not (tmp_path / "log").exists()


def test_main_reports_the_failed_step(tmp_path, run_module):
    args = {"src": str(tmp_path / "nothing"), "prefix": str(tmp_path / "install"), "_ansible_check_mode": True}
    failed, res = run_module(mod.main, args, commands=[])
    assert failed and res["failed_step"] == "locate sources" and "clone it recursively" in res["msg"]
    assert res["log_tail"] == ""
