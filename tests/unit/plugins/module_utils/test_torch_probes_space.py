"""torch_probes' free-space preflight and disk-full message (the faults suite's pure-logic part)."""

from __future__ import annotations

import os

from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils import torch_probes as probes
from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils.torch_records import STATE_FILE


def free_here(path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize // probes.MB


def test_no_check_when_min_free_is_zero(tmp_path):
    assert probes.space_shortfalls(str(tmp_path / "src"), str(tmp_path / "src/build"), str(tmp_path / "p"), 0) == []


def test_short_filesystem_is_named_with_free_and_needed(tmp_path):
    needed = free_here(tmp_path) + 1000
    [problem] = probes.space_shortfalls(str(tmp_path / "src"), str(tmp_path / "src/build"), str(tmp_path / "p"), needed)
    mount = probes.mount_point(str(tmp_path))
    assert problem.startswith(f"not enough disk space to build Torch7 on {mount} (sources ")
    assert f"a build needs about {needed} MB there (torch7_min_free_mb" in problem


def test_enough_space_passes(tmp_path):
    assert probes.space_shortfalls(str(tmp_path / "src"), str(tmp_path / "src/build"), str(tmp_path / "p"), 1) == []


def test_what_the_build_replaces_counts_as_free(tmp_path):
    """A build tree and a prefix of ours are removed before building: their space is available."""
    src, build, prefix = tmp_path / "src", tmp_path / "src" / "build", tmp_path / "prefix"
    build.mkdir(parents=True)
    prefix.mkdir()
    (build / "objects").write_bytes(b"\0" * (3 * probes.MB))
    (prefix / STATE_FILE).write_text("{}")
    (prefix / "lib.so").write_bytes(b"\0" * (2 * probes.MB))
    used = probes.tree_mb(str(build)) + probes.tree_mb(str(prefix))
    assert used >= 4
    free = free_here(tmp_path)
    assert probes.space_shortfalls(str(src), str(build), str(prefix), free + used - 1) == []
    assert probes.space_shortfalls(str(src), str(build), str(prefix), free + used + 50)


def test_disk_full_message_only_for_a_full_disk(tmp_path):
    other = "step 'luarocks make torch' failed with rc=1\nundefined reference"
    assert probes.disk_full_message(other, [str(tmp_path)], 200) is None
    text = 'CMake Error: file INSTALL cannot copy file "/x/libTH.so": No space left on device.'
    message = probes.disk_full_message(text, [str(tmp_path / "prefix")], 200)
    assert message.startswith(
        f"no space left on device: {probes.mount_point(str(tmp_path))} (for {tmp_path / 'prefix'})"
    )
    assert "MB free now; a build needs about 200 MB there (torch7_min_free_mb)" in message
    assert "[Errno 28]" not in message
    oserror = probes.disk_full_message("OSError: [Errno 28] No space left on device", [str(tmp_path)], 0)
    assert oserror.endswith("MB free now")
