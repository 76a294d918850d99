"""Verify a host provisioned by site.yml (testinfra, run by Molecule's verifier)."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("command", ["gcc --version", "g++ --version", "cmake --version", "git --version", "unzip -v"])
def test_build_tools_run(host, command):
    assert host.run(command).rc == 0, command


@pytest.mark.parametrize("header", ["readline/readline.h", "ncurses.h", "jpeglib.h", "png.h"])
def test_development_headers_installed(host, header):
    assert host.run(f"echo '#include <{header}>' | cpp -o /dev/null -").rc == 0, header


def test_openblas_resolves_to_openmp_build(host):
    resolved = host.check_output("readlink -f $(gcc -print-file-name=libopenblas.so.0)")
    assert "openblas-openmp" in resolved, resolved
    linked = host.check_output("ldd %s", resolved)
    assert "libgomp" in linked, linked


def test_blas_alternative_points_at_openmp(host):
    arch = host.check_output("gcc -print-multiarch")
    resolved = host.check_output(f"readlink -f /usr/lib/{arch}/libblas.so.3")
    assert "openblas-openmp" in resolved, resolved
