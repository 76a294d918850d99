"""Each role's meta/argument_specs.yml against its defaults/main.yml, and its README from the specs.

    python scripts/role_specs.py check     lint (scripts/test.sh lint): fails when a role's specs and
                                           defaults disagree or its README's variables section is stale
    python scripts/role_specs.py readmes   rewrites the variables section of every roles/*/README.md
                                           (between the markers; a missing README is created)

Specs and defaults agree when every variable of defaults/main.yml (except internal ones, ``__<role>_*``)
is an option of an entry point, every option is in defaults/main.yml unless it is ``required`` (and a
required one is not, or Ansible would never find it missing), and each option's ``default:`` equals the
value in defaults/main.yml (a missing ``default:`` means null), compared by the option's type: numbers
as numbers, booleans as booleans, a scalar str/path by its text. A template in defaults/main.yml
(``{{ ... }}``) agrees with the same template (whitespace aside), with the literal of its last
``| default(LITERAL)`` (the value when what it reads is unset, e.g. ``{{ torch7_repo | default('URL') }}``
and ``URL``), or, for an option whose type a template cannot have in the specs (bool, int, list, ...:
the docs tooling rejects it), with no ``default:``.
``--roles DIR`` checks another roles folder (the unit tests feed it disagreeing roles).
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path
from typing import Any

import yaml
from antsibull_docs_parser import dom
from antsibull_docs_parser.parser import Context, parse

ROLES = Path(__file__).resolve().parents[1] / "roles"
COLLECTION = "rnn_bootstrap.char_rnn"
BEGIN = "<!-- BEGIN role variables: generated from meta/argument_specs.yml by scripts/role_specs.py, do not edit -->"
END = "<!-- END role variables -->"
# Lists and dicts longer than this go in a YAML block below the table.
INLINE_DEFAULT = 60


def load(role: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The role's entry points (meta/argument_specs.yml) and its defaults (defaults/main.yml)."""
    specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text(encoding="utf-8"))["argument_specs"]
    defaults_file = role / "defaults" / "main.yml"
    defaults = yaml.safe_load(defaults_file.read_text(encoding="utf-8")) if defaults_file.is_file() else None
    return specs, defaults or {}


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    return None


_FALLBACK = re.compile(r"^\{\{.*\|\s*default\((?P<literal>.+?)(?:\s*,\s*(?:true|True))?\)\s*\}\}$", re.S)
_NO_LITERAL = object()


def _fallback(template: str) -> Any:
    """The literal of a template's last ``| default(LITERAL)``, or _NO_LITERAL."""
    match = _FALLBACK.match(template.strip())
    if not match:
        return _NO_LITERAL
    literal = match.group("literal").strip()
    literal = {"true": "True", "false": "False", "none": "None"}.get(literal, literal)
    try:
        return ast.literal_eval(literal)
    except (ValueError, SyntaxError):
        return _NO_LITERAL


def same(kind: str | None, spec_default: Any, value: Any) -> bool:
    """Whether an option's spec ``default:`` and its defaults/main.yml value are the same for its type."""
    if isinstance(value, str) and "{{" in value:
        if isinstance(spec_default, str) and " ".join(spec_default.split()) == " ".join(value.split()):
            return True
        if spec_default is None and kind not in ("str", "path", "raw", None):
            return True
        fallback = _fallback(value)
        return fallback is not _NO_LITERAL and spec_default is not None and same(kind, spec_default, fallback)
    scalar = (str, int, float)
    if kind in ("int", "float") and isinstance(spec_default, scalar) and isinstance(value, scalar):
        if isinstance(spec_default, bool) or isinstance(value, bool):
            return spec_default is value
        try:
            return float(spec_default) == float(value)
        except ValueError:
            return False
    if kind == "bool" and spec_default is not None and value is not None:
        return _as_bool(spec_default) is not None and _as_bool(spec_default) == _as_bool(value)
    if kind in ("str", "path", None) and isinstance(spec_default, scalar) and isinstance(value, scalar):
        if isinstance(spec_default, bool) or isinstance(value, bool):
            return spec_default is value
        return str(spec_default) == str(value)
    return type(spec_default) is type(value) and spec_default == value


def disagreements(role: Path) -> list[str]:
    """What the role's specs and defaults disagree on, one line each; empty when they agree."""
    specs, defaults = load(role)
    where = f"roles/{role.name}"
    problems = []
    options: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for entry_point, spec in specs.items():
        for name, option in (spec.get("options") or {}).items():
            options.setdefault(name, []).append((entry_point, option or {}))
    for name in defaults:
        if not name.startswith("_") and name not in options:
            problems.append(f"{where}: {name} is in defaults/main.yml but in no entry point of meta/argument_specs.yml")
    for name, found in sorted(options.items()):
        for entry_point, option in found:
            at = f"{where}: {name} (entry point {entry_point})"
            if option.get("required"):
                if name in defaults:
                    problems.append(
                        f"{at} is required, but defaults/main.yml gives it a value, so it is never missing: "
                        "remove it from defaults/main.yml or make it optional with that default"
                    )
                continue
            if name not in defaults:
                problems.append(f"{at} is not in defaults/main.yml: add it there (or make it required)")
                continue
            spec_default = option.get("default")
            if not same(option.get("type"), spec_default, defaults[name]):
                problems.append(
                    f"{at}: meta/argument_specs.yml says default {spec_default!r}, "
                    f"defaults/main.yml has {defaults[name]!r}"
                )
    return problems


# ---------------------------------------------------------------------------------------- README


def _text(markup: str | list[str], role: str, entry_point: str) -> list[str]:
    """Ansible doc markup (C(), O(), V(), M(), P(), ...) as Markdown, one string per paragraph."""
    context = Context(current_plugin=dom.PluginIdentifier(fqcn=f"{COLLECTION}.{role}", type="role"),
                      role_entrypoint=entry_point)  # fmt: skip
    paragraphs = []
    for paragraph in parse(markup, context):
        out = []
        for part in paragraph:
            if isinstance(part, dom.TextPart):
                out.append(part.text)
            elif isinstance(part, (dom.CodePart, dom.OptionValuePart)):
                out.append(f"`{part.text if isinstance(part, dom.CodePart) else part.value}`")
            elif isinstance(part, (dom.OptionNamePart, dom.ReturnValuePart)):
                out.append(f"`{part.name}={part.value}`" if part.value is not None else f"`{part.name}`")
            elif isinstance(part, dom.EnvVariablePart):
                out.append(f"`{part.name}`")
            elif isinstance(part, dom.ModulePart):
                out.append(f"`{part.fqcn}`")
            elif isinstance(part, dom.PluginPart):
                out.append(f"`{part.plugin.fqcn}`")
            elif isinstance(part, dom.ItalicPart):
                out.append(f"*{part.text}*")
            elif isinstance(part, dom.BoldPart):
                out.append(f"**{part.text}**")
            elif isinstance(part, dom.URLPart):
                out.append(f"<{part.url}>")
            elif isinstance(part, dom.LinkPart):
                out.append(f"[{part.text}]({part.url})")
            elif isinstance(part, dom.RSTRefPart):
                out.append(part.text)
            elif isinstance(part, dom.HorizontalLinePart):
                out.append("\n---\n")
            else:
                raise ValueError(f"roles/{role}: cannot render {part!r} in {markup!r}")
        paragraphs.append("".join(out))
    return paragraphs


def _cell(text: str) -> str:
    return " ".join(text.replace("|", "\\|").split())


def _value(value: Any) -> str:
    """A value as YAML would write it, in a code span."""
    if isinstance(value, str):
        return f"`{value}`" if value else '`""`'
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if value is None or isinstance(value, (int, float)):
        return "`null`" if value is None else f"`{value}`"
    return f"`{yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()}`"


def _suboptions(options: dict[str, Any], role: str, entry_point: str) -> str:
    items = []
    for name, option in options.items():
        facts = [option.get("type", "str")]
        if option.get("required"):
            facts.append("required")
        if option.get("choices"):
            facts.append("one of " + ", ".join(_value(c) for c in option["choices"]))
        if "default" in option:
            facts.append(f"default {_value(option['default'])}")
        description = " ".join(_text(option.get("description", ""), role, entry_point)).rstrip(".")
        items.append(f"`{name}` ({', '.join(facts)}): {description}")
    return "Each item: " + "; ".join(items) + "."


def render(role: str, specs: dict[str, Any]) -> str:
    """The README section for all entry points of a role."""
    out = [BEGIN, ""]
    for entry_point, spec in specs.items():
        title = f"## Variables of `{entry_point}`" if len(specs) > 1 else "## Variables"
        out += [title, ""]
        if len(specs) > 1:
            out += [f"{_text(spec.get('short_description', ''), role, entry_point)[0]}", ""]
        for paragraph in _text(spec.get("description") or [], role, entry_point):
            out += [paragraph, ""]
        options = spec.get("options") or {}
        if not options:
            out += ["None.", ""]
            continue
        out += ["| Variable | Type | Default | Description |", "| --- | --- | --- | --- |"]
        blocks = []
        for name, option in options.items():
            kind = option.get("type", "str")
            if option.get("elements"):
                kind += f" of {option['elements']}"
            if option.get("required"):
                default = "**required**"
            elif option.get("default") is None:
                default = ""
            else:
                default = _value(option["default"])
                if len(default) > INLINE_DEFAULT and isinstance(option["default"], (list, dict)):
                    blocks += [f"Default of `{name}`:", "", "```yaml",
                               yaml.safe_dump({name: option["default"]}, sort_keys=False, width=100).rstrip(),
                               "```", ""]  # fmt: skip
                    default = "below"
            description = _text(option.get("description", ""), role, entry_point)
            if option.get("choices"):
                description.append("One of " + ", ".join(_value(c) for c in option["choices"]) + ".")
            if option.get("options"):
                description.append(_suboptions(option["options"], role, entry_point))
            cells = [f"`{name}`", kind, default, "<br>".join(description)]
            out.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        out += ["", *blocks]
    while out[-1] == "":
        out.pop()
    return "\n".join([*out, "", END])


def readme(role: Path, current: str | None) -> str:
    """The role's README with its variables section brought up to date (a new one when ``current`` is None)."""
    specs = load(role)[0]
    section = render(role.name, specs)
    if current is None:
        main = specs.get("main") or next(iter(specs.values()))
        summary = _text(main.get("short_description", ""), role.name, "main")[0]
        return (
            f"# {COLLECTION}.{role.name}\n\n{summary.rstrip('.')}.\n\n"
            f"A role of the [{COLLECTION}](../../README.md) collection. "
            f"`ansible-doc -t role {COLLECTION}.{role.name}` shows the same variables.\n\n{section}\n"
        )
    if current.count(BEGIN) != 1 or current.count(END) != 1:
        raise ValueError(f"roles/{role.name}/README.md: needs exactly one of each marker, {BEGIN} and {END}")
    head, rest = current.split(BEGIN, 1)
    return head + section + rest.split(END, 1)[1]


def roles(roles_dir: Path) -> list[Path]:
    return sorted(p for p in roles_dir.iterdir() if (p / "meta" / "argument_specs.yml").is_file())


def check(roles_dir: Path) -> list[str]:
    problems = []
    for role in roles(roles_dir):
        problems += disagreements(role)
        path = role / "README.md"
        current = path.read_text(encoding="utf-8") if path.is_file() else None
        try:
            stale = current is None or readme(role, current) != current
        except ValueError as exc:
            problems.append(str(exc))
            continue
        if stale:
            what = "is missing" if current is None else "has a variables section that is not what its specs say"
            problems.append(f"roles/{role.name}/README.md {what}: run python scripts/role_specs.py readmes")
    return problems


def write_readmes(roles_dir: Path) -> list[Path]:
    written = []
    for role in roles(roles_dir):
        path = role / "README.md"
        current = path.read_text(encoding="utf-8") if path.is_file() else None
        new = readme(role, current)
        if new != current:
            path.write_text(new, encoding="utf-8")
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("command", choices=["check", "readmes"])
    parser.add_argument("--roles", type=Path, default=ROLES, help="the roles folder (default: this checkout's)")
    args = parser.parse_args(argv)
    if args.command == "readmes":
        for path in write_readmes(args.roles):
            print(f"wrote {path}")
        return 0
    problems = check(args.roles)
    for problem in problems:
        print(problem, file=sys.stderr)
    count = len(roles(args.roles))
    print(
        f"role specs: {count} roles, "
        + (f"{len(problems)} problem(s)" if problems else "specs, defaults and READMEs agree")
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
