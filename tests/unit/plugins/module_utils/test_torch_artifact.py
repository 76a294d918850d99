"""Unit tests for the Torch7 artifact key, name and manifest (module_utils/torch_artifact.py)
and the torch_artifact_key module, with a fake runner for ldconfig, ldd and nvcc."""

from __future__ import annotations

import json

import pytest
from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils import torch_artifact as ta
from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils.torch_records import STATE_FILE
from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils.torch_runner import Runner, TorchError
from ansible_collections.rnn_bootstrap.char_rnn.plugins.modules import torch_artifact_key as mod

SHA = "0219027e6c4644a0ba5c5bf137c989a0a8c9e01b"
LDCONFIG = """\
1234 libs found in cache `/etc/ld.so.cache'
\tlibopenblas.so.0 (libc6,x86-64) => /lib/x86_64-linux-gnu/libopenblas.so.0
\tlibopenblas.so (libc6,x86-64) => /lib/x86_64-linux-gnu/libopenblas.so
\tlibm.so.6 (libc6,x86-64, OS ABI: Linux 3.2.0) => /lib/x86_64-linux-gnu/libm.so.6
"""
LDD_OPENMP = "\tlibgomp.so.1 => /lib/x86_64-linux-gnu/libgomp.so.1 (0x1)\n\tlibc.so.6 => /lib/libc.so.6 (0x2)\n"
LDD_PTHREAD = "\tlibgfortran.so.5 => /lib/x86_64-linux-gnu/libgfortran.so.5 (0x1)\n\tlibc.so.6 => /lib/libc.so.6\n"


class FakeRunner(Runner):
    def __init__(self, ldconfig=LDCONFIG, ldd=LDD_OPENMP, nvcc=None):
        self.ldconfig, self.ldd, self.nvcc = ldconfig, ldd, nvcc

    def capture(self, argv, cwd=None, env=None, timeout=600):
        if argv[-1] == "-p":
            return 0, self.ldconfig
        if argv[0] == "ldd":
            return 0, self.ldd
        if argv[-1] == "--version":
            return 0, "Cuda compilation tools, release 12.4, V12.4.131\n"
        raise AssertionError(argv)

    def which(self, name, path=None):
        return self.nvcc if name == "nvcc" else None

    def is_executable(self, path):
        return path == self.nvcc  # not this machine's CUDA, if it has one


@pytest.mark.parametrize(
    ("ldd", "expected"),
    [(LDD_OPENMP, "libopenblas.so.0:openmp"), (LDD_PTHREAD, "libopenblas.so.0:no-openmp")],
)
def test_blas_identity_names_soname_and_threading(ldd, expected):
    assert ta.blas_identity(FakeRunner(ldd=ldd), "libopenblas.so.0") == expected


def test_blas_identity_of_an_unknown_library_is_none():
    assert ta.blas_identity(FakeRunner(), "libmkl_rt.so") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('ID=debian\nVERSION_ID="12"\n', ("debian", "12")),
        ('ID="rocky"\nVERSION_ID="9.4"\n', ("rocky", "9")),
        ('ID=amzn\nVERSION_ID="2023"\n', ("amzn", "2023")),
        ('ID="opensuse-leap"\nVERSION_ID="15.6"\n', ("opensuse-leap", "15")),
        ("ID=debian\nVERSION_CODENAME=forky\n", ("debian", "forky")),
    ],
)
def test_os_release(tmp_path, text, expected):
    (tmp_path / "os-release").write_text(text)
    assert ta.read_os_release(str(tmp_path / "os-release")) == expected


def test_name_reads_as_what_it_is_and_ids_every_field(artifact_key):
    key = artifact_key
    name = ta.artifact_name(key())
    assert name.startswith("torch7-debian12-x86_64-luajit21-0219027e6c46-cpu-")
    assert name.endswith(ta.key_id(key()))
    for field, other in [
        ("glibc", "2.41"),
        ("prefix", "/opt/torch7/install"),
        ("packages", ["torch", "image"]),
        ("blas", "libopenblas.so.0:no-openmp"),
    ]:
        assert ta.key_id(key(**{field: other})) != ta.key_id(key()), field
    assert "-cuda12.4-" in ta.artifact_name(key(cuda=True, cuda_version="12.4"))


def test_key_differences_and_description(artifact_key):
    key = artifact_key
    assert ta.key_differences(key(), key()) == []
    assert ta.key_differences(key(), key(release="13", glibc="2.41")) == ["release", "glibc"]
    assert "release=12" in ta.describe_key(key())


def test_manifest_records_checksum_and_reads_back(tmp_path, artifact_key):
    tarball = tmp_path / "t.tar.gz"
    tarball.write_bytes(b"not really a tarball")
    manifest = ta.make_manifest(artifact_key(), str(tarball), {"prefix": "/opt/torch/install"}, "host-1", "now")
    path = ta.write_json(str(tmp_path / "t.json"), manifest)
    back = ta.read_manifest(path)
    assert back["sha256"] == ta.sha256_file(str(tarball)) and back["size"] == 20 and back["built_on"] == "host-1"


@pytest.mark.parametrize("content", ["", "{}", '{"key": {}}', "[1]"])
def test_a_file_that_is_not_a_manifest_is_refused(tmp_path, content):
    (tmp_path / "m.json").write_text(content)
    with pytest.raises(TorchError, match=r"m\.json"):
        ta.read_manifest(str(tmp_path / "m.json"))


# --------------------------------------------------------------------------- the module


def params(tmp_path, **over):
    p = {"commit": SHA, "lua_flavour": "LUAJIT21", "cuda": False, "extra_packages": ["lua-cjson"],
         "blas_soname": "libopenblas.so.0", "prefix": str(tmp_path / "install")}  # fmt: skip
    p.update(over)
    return p


def test_module_computes_key_name_and_installed_key(tmp_path):
    ok, res = mod.compute(params(tmp_path), FakeRunner())
    assert ok, res
    assert res["key"]["commit"] == SHA and "lua-cjson" in res["key"]["packages"] and "optim" in res["key"]["packages"]
    assert res["key"]["blas"] == "libopenblas.so.0:openmp" and res["installed_key_id"] is None
    assert res["name"] == ta.artifact_name(res["key"]) and not res["changed"]
    (tmp_path / "install").mkdir()
    (tmp_path / "install" / STATE_FILE).write_text(json.dumps({"artifact_key_id": res["key_id"]}))
    assert mod.compute(params(tmp_path), FakeRunner())[1]["installed_key_id"] == res["key_id"]


@pytest.mark.parametrize(
    ("over", "runner", "message"),
    [
        ({"commit": "master"}, FakeRunner(), "full 40-character SHA"),
        ({"extra_packages": ["qtlua"]}, FakeRunner(), "unknown Torch package"),
        ({"cuda": True}, FakeRunner(), "no nvcc"),
        ({"blas_soname": "libmkl_rt.so"}, FakeRunner(), "install the BLAS runtime first"),
    ],
)
def test_module_refuses_with_the_reason(tmp_path, over, runner, message):
    ok, res = mod.compute(params(tmp_path, **over), runner)
    assert not ok and message in res["msg"]


def test_module_with_cuda_records_nvcc_version(tmp_path):
    ok, res = mod.compute(params(tmp_path, cuda=True), FakeRunner(nvcc="/usr/local/cuda/bin/nvcc"))
    assert ok and res["key"]["cuda_version"] == "12.4" and "cutorch" in res["key"]["packages"]
