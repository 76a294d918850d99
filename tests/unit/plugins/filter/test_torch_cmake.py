"""The torch7 role's CMake filter asks torch_install's own rule (module_utils/torch_probes.py)."""

from __future__ import annotations

import pytest
from ansible_collections.rnn_bootstrap.char_rnn.plugins.filter.torch_cmake import FilterModule
from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils import torch_probes as probes

refusal = FilterModule().filters()["torch_cmake_refusal"]


@pytest.mark.parametrize(
    ("output", "refused"),
    [
        ("cmake version 3.25.1\n\nCMake suite maintained and supported by Kitware.\n", False),
        ("cmake version 3.31.6\n", False),
        ("cmake version 4.0.0-rc1\n", True),
        ("cmake version 4.1.2\n", True),
        ("", True),  # cmake missing or silent: the role installs the pinned CMake 3
        (None, True),
    ],
)
def test_filter_refuses_what_the_module_refuses(output, refused):
    reason = refusal(output)
    assert bool(reason) is refused
    assert reason == (probes.cmake_refusal(probes.parse_cmake_version(output or "")) or "")
    if output and refused:
        assert "CMP0026" in reason and "CMake 3.x" in reason
