"""The bundle role falls back to literal copies of the other roles' defaults: keep them equal."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BUNDLE = yaml.safe_load((REPO / "roles/bundle/defaults/main.yml").read_text())
SPECS = yaml.safe_load((REPO / "roles/bundle/meta/argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
# bundle variable -> (role, variable) it reads when set
SOURCES = {
    "bundle_torch7_repo": ("torch7", "torch7_repo"),
    "bundle_torch7_version": ("torch7", "torch7_version"),
    "bundle_char_rnn_repo": ("char_rnn", "char_rnn_repo"),
    "bundle_char_rnn_version": ("char_rnn", "char_rnn_version"),
    "bundle_cmake3_version": ("torch7", "torch7_cmake3_version"),
    "bundle_openblas_version": ("system_deps", "system_deps_openblas_version"),
    "bundle_openblas_sha256": ("system_deps", "system_deps_openblas_sha256"),
    "bundle_dataset": ("char_rnn", "char_rnn_dataset"),
    "bundle_torch7_artifact_store": ("torch7", "torch7_artifact_store"),
}


def role_default(role: str, name: str) -> str:
    return str(yaml.safe_load((REPO / "roles" / role / "defaults/main.yml").read_text())[name])


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_fallback_equals_the_roles_default(name: str) -> None:
    role, source = SOURCES[name]
    match = re.fullmatch(r"\{\{ (\w+) \| default\('([^']*)'\) \}\}", BUNDLE[name])
    assert match, BUNDLE[name]
    assert match.group(1) == source
    assert match.group(2) == role_default(role, source)
    assert str(SPECS[name]["default"]) == role_default(role, source)


def test_openblas_url_default_is_the_system_deps_one() -> None:
    version = role_default("system_deps", "system_deps_openblas_version")
    theirs = re.sub(
        r"\s*\{\{ system_deps_openblas_version\s*\}\}\s*",
        version,
        role_default("system_deps", "system_deps_openblas_url"),
    )
    ours = re.sub(r"'\s*~ bundle_openblas_version ~\s*'", version, BUNDLE["bundle_openblas_url"])
    match = re.search(r"system_deps_openblas_url \| default\('([^']*)'\)", ours)
    assert match, ours
    assert match.group(1) == theirs.strip()


def test_every_default_has_a_spec() -> None:
    # bundle_dir is required: no default (scripts/role_specs.py checks every role this way)
    assert set(BUNDLE) | {"bundle_dir"} == set(SPECS)
