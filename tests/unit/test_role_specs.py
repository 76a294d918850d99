"""scripts/role_specs.py: the lint that fails when a role's argument specs and defaults disagree or its
README's variables section is stale, fed roles that disagree, and the README it writes."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("role_specs", REPO / "scripts" / "role_specs.py")
assert _spec and _spec.loader
role_specs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(role_specs)

OPTIONS = {
    "demo_name": {"type": "str", "default": "x", "description": "A C(name) with a | pipe."},
    "demo_count": {"type": "int", "default": 3, "description": "How many; O(demo_name) names them."},
    "demo_ratio": {"type": "float", "default": 0, "description": "A fraction."},
    "demo_on": {"type": "bool", "default": True, "description": "On."},
    "demo_list": {"type": "list", "elements": "str", "default": ["a"], "description": "Items."},
    "demo_mode": {"type": "str", "choices": ["fast", "slow"], "default": "fast", "description": "V(fast) or V(slow)."},
    "demo_key": {"type": "str", "required": True, "description": "Must be given."},
    "demo_templated": {"type": "str", "default": "{{ other | default('y') }}", "description": "From other."},
}
DEFAULTS = {
    "demo_name": "x",
    "demo_count": 3,
    "demo_ratio": 0.0,
    "demo_on": "yes",
    "demo_list": ["a"],
    "demo_mode": "fast",
    "demo_templated": "{{ other\n  | default('y') }}",
    "__demo_internal": 1,
}


def make_role(roles: Path, options: dict[str, Any] | None = None, defaults: dict[str, Any] | None = None) -> Path:
    role = roles / "demo"
    (role / "meta").mkdir(parents=True, exist_ok=True)
    (role / "defaults").mkdir(exist_ok=True)
    specs = {"argument_specs": {"main": {"short_description": "A demo role", "description": ["It demonstrates."],
                                         "options": OPTIONS if options is None else options}}}  # fmt: skip
    (role / "meta" / "argument_specs.yml").write_text(yaml.safe_dump(specs))
    (role / "defaults" / "main.yml").write_text(yaml.safe_dump(DEFAULTS if defaults is None else defaults))
    return role


def check(roles: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = role_specs.main(["check", "--roles", str(roles)])
    return code, capsys.readouterr().err


def test_an_agreeing_role_with_its_readme_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_role(tmp_path)
    assert role_specs.main(["readmes", "--roles", str(tmp_path)]) == 0
    assert check(tmp_path, capsys) == (0, "")


AT = "(entry point main)"
# id -> (options, defaults, what the lint must say about roles/demo)
DISAGREEMENTS = {
    "in-defaults-only": (OPTIONS, {**DEFAULTS, "demo_extra": 1}, "demo_extra is in defaults/main.yml but in no entry"),
    "in-specs-only": ({**OPTIONS, "demo_more": {"type": "str"}}, DEFAULTS, f"demo_more {AT} is not in defaults"),
    "other-default": (
        OPTIONS,
        {**DEFAULTS, "demo_count": 4},
        f"demo_count {AT}: meta/argument_specs.yml says default 3",
    ),
    "not-a-number": (OPTIONS, {**DEFAULTS, "demo_count": "3x"}, f"demo_count {AT}: "),
    "other-bool": (OPTIONS, {**DEFAULTS, "demo_on": False}, f"demo_on {AT}: "),
    "other-list": (OPTIONS, {**DEFAULTS, "demo_list": []}, f"demo_list {AT}: "),
    "null-for-a-string": (OPTIONS, {**DEFAULTS, "demo_name": None}, f"demo_name {AT}: "),
    "other-template": (OPTIONS, {**DEFAULTS, "demo_templated": "{{ other | default('z') }}"}, f"demo_templated {AT}: "),
    "spec-without-default": (
        {**OPTIONS, "demo_name": {"type": "str"}},
        DEFAULTS,
        f"demo_name {AT}: meta/argument_specs",
    ),
    "required-with-a-default": (OPTIONS, {**DEFAULTS, "demo_key": ""}, f"demo_key {AT} is required, but defaults/main"),
}


@pytest.mark.parametrize("disagreement", DISAGREEMENTS)
def test_a_disagreement_fails_naming_the_variable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], disagreement: str
) -> None:
    options, defaults, expected = DISAGREEMENTS[disagreement]
    make_role(tmp_path)
    role_specs.write_readmes(tmp_path)
    make_role(tmp_path, options, defaults)
    code, err = check(tmp_path, capsys)
    assert code == 1
    assert f"roles/demo: {expected}" in err


def test_a_stale_or_missing_readme_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_role(tmp_path)
    code, err = check(tmp_path, capsys)
    assert code == 1 and "roles/demo/README.md is missing" in err
    role_specs.write_readmes(tmp_path)
    make_role(tmp_path, {**OPTIONS, "demo_count": {**OPTIONS["demo_count"], "description": "Changed."}})
    code, err = check(tmp_path, capsys)
    assert code == 1 and "roles/demo/README.md has a variables section that is not what its specs say" in err
    readme = tmp_path / "demo" / "README.md"
    readme.write_text(readme.read_text().replace(role_specs.END, ""))
    code, err = check(tmp_path, capsys)
    assert code == 1 and "needs exactly one of each marker" in err


def test_readme_keeps_what_is_outside_the_markers(tmp_path: Path) -> None:
    role = make_role(tmp_path)
    role_specs.write_readmes(tmp_path)
    readme = role / "README.md"
    text = readme.read_text()
    assert text.startswith("# rnn_bootstrap.char_rnn.demo\n\nA demo role.\n")
    readme.write_text("# Demo\n\nWritten by hand.\n\n" + text[text.index(role_specs.BEGIN) :] + "\nAlso by hand.\n")
    make_role(tmp_path, {**OPTIONS, "demo_count": {**OPTIONS["demo_count"], "description": "Now changed."}})
    assert role_specs.write_readmes(tmp_path) == [readme]
    text = readme.read_text()
    assert text.startswith("# Demo\n\nWritten by hand.\n\n") and text.endswith("\nAlso by hand.\n")
    assert "| `demo_count` | int | `3` | Now changed. |" in text


def test_readme_table(tmp_path: Path) -> None:
    role = make_role(tmp_path)
    text = role_specs.readme(role, None)
    assert "| `demo_name` | str | `x` | A `name` with a \\| pipe. |" in text
    assert "| `demo_count` | int | `3` | How many; `demo_name` names them. |" in text
    assert "| `demo_on` | bool | `true` | On. |" in text
    assert "| `demo_list` | list of str | `[a]` | Items. |" in text
    assert "| `demo_mode` | str | `fast` | `fast` or `slow`.<br>One of `fast`, `slow`. |" in text
    assert "| `demo_key` | str | **required** | Must be given. |" in text
    assert "| `demo_templated` | str | `{{ other \\| default('y') }}` | From other. |" in text


@pytest.mark.parametrize(
    ("kind", "spec_default", "value", "agree"),
    [
        ("int", 0, 0.0, True),
        ("float", "0.5", 0.5, True),
        ("int", 1, True, False),
        ("str", "3.8", 3.8, True),
        ("str", "", None, False),
        ("bool", True, "yes", True),
        ("bool", False, None, False),
        ("list", [], "", False),
        ("dict", {"a": 1}, {"a": 1}, True),
        ("raw", "probe", "probe", True),
        ("str", "{{ a |  default('b') }}", "{{ a\n | default('b') }}", True),
        # a template's fallback literal documents it: the value when what it reads is unset
        ("str", "b", "{{ a | default('b') }}", True),
        ("str", "c", "{{ a | default('b') }}", False),
        ("list", [], "{{ a | default([]) }}", True),
        ("list", ["x"], "{{ a | default([]) }}", False),
        ("bool", False, "{{ a | default(false) }}", True),
        ("path", "~/k", "{{ lookup('env', 'K') | default('~/k', true) }}", True),
        ("str", "x", "{{ a | default('x' ~ b) }}", False),
        ("str", "/p/bin", "{{ a | default('/p') }}/bin", False),
        # a type the specs cannot hold a template for may have no default
        ("bool", None, "{{ __internal | default(false) }}", True),
        ("list", None, "{{ a }}", True),
        ("str", None, "{{ a }}", False),
    ],
)
def test_values_are_compared_by_type(kind: str, spec_default: Any, value: Any, agree: bool) -> None:
    assert role_specs.same(kind, spec_default, value) is agree


def test_this_collections_roles_agree() -> None:
    assert role_specs.check(REPO / "roles") == []
    # every role of the collection is checked, not only those the script happens to find
    every_role = sorted(d.name for d in (REPO / "roles").iterdir() if (d / "tasks").is_dir())
    assert sorted(r.name for r in role_specs.roles(REPO / "roles")) == every_role
