"""Bad input on the roles' variables and the modules' options, table-driven (the faults suite's
rows that need no container).

Every row runs in one ansible-playbook run on localhost, in check mode, each in a block whose
rescue keeps the failure message. A row passes when the play failed there with a message naming
the variable (or option) and what is allowed, and the whole run would change nothing.

- Generated rows: every role variable and module option typed int, float, bool, list or with
  choices, given a value of the wrong kind: the roles' argument specs (validated by the same
  action Ansible runs when a role starts) and the modules' argument specs reject them.
- Written rows: text and paths the specs cannot judge (unpinned versions, relative paths, data
  set names, corpora that are binary, empty, missing or too big for LuaJIT, numbers out of
  range), through the roles' own preflight checks.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1].parent
ROLES = ("system_deps", "git_mirrors", "torch7", "luarocks", "char_rnn", "char_rnn_train", "ec2_fleet")
MODULES = (
    "corpus_check", "torch_install", "torch_artifact_key", "luarocks", "checkpoint_info", "train_progress", "loss_plot",
)  # fmt: skip
# A wrong value per type, and the word the validator uses for what is allowed.
WRONG = {
    "int": ("many", "unable to convert to int"),
    "float": ("lots", "unable to convert to float"),
    "bool": ("perhaps", "unable to convert to bool"),
    "list": ({"not": "a list"}, "unable to convert to list"),
    "dict": ("not a dict", "unable to convert to dict"),
}
# Plausible values for a module's required options, so that only the bad one is wrong.
FILLER = {"path": "/nonexistent/faults", "str": "x", "int": 1, "float": 0.5, "bool": False, "list": [], "dict": {}}


def role_options(role: str) -> dict:
    specs = yaml.safe_load((REPO / "roles" / role / "meta" / "argument_specs.yml").read_text())
    return specs["argument_specs"]["main"].get("options") or {}


def module_options(module: str) -> dict:
    text = (REPO / "plugins" / "modules" / f"{module}.py").read_text()
    doc = text.split('DOCUMENTATION = r"""', 1)[1].split('"""', 1)[0]
    return yaml.safe_load(doc).get("options") or {}


def wrong_value(spec: dict) -> tuple[object, list[str]] | None:
    if spec.get("choices"):
        return "bogus-choice", ["must be one of", str(spec["choices"][0])]
    kind = spec.get("type", "str")
    if kind in WRONG:
        value, allowed = WRONG[kind]
        return value, [allowed]
    return None


def generated_rows() -> list[dict]:
    rows = []
    for role in ROLES:
        options = role_options(role)
        for name, spec in options.items():
            wrong = wrong_value(spec)
            if wrong:
                rows.append({"id": f"{role}:{name}", "kind": "role_spec", "role": role, "name": name,
                             "value": wrong[0], "expect": [name, *wrong[1]]})  # fmt: skip
    for module in MODULES:
        options = module_options(module)
        required = {
            name: spec.get("choices", [None])[0] or FILLER[spec.get("type", "str")]
            for name, spec in options.items()
            if spec.get("required")
        }
        for name, spec in options.items():
            wrong = wrong_value(spec)
            if wrong:
                args = {**required, name: wrong[0]}
                rows.append({"id": f"module {module}:{name}", "kind": "module", "module": module, "name": name,
                             "args": args, "expect": [name, *wrong[1]]})  # fmt: skip
    return rows


def written_rows(corpora: dict[str, str]) -> list[dict]:
    def pre(role: str, row_id: str, variables: dict, *expect: str) -> dict:
        return {"id": row_id, "kind": "preflight", "role": role, "vars": variables, "expect": list(expect)}

    torch = {"torch7_version": "0" * 40}
    char_rnn = {"char_rnn_version": "0" * 40, "char_rnn_dataset": "mytext", "char_rnn_batch_size": 10,
                "char_rnn_seq_length": 20, "char_rnn_lua_flavour": "LUAJIT21"}  # fmt: skip
    return [
        pre("torch7", "torch7_version:branch", {"torch7_version": "master"},
            "torch7_version must be a full 40-character commit SHA", "'master'"),
        pre("torch7", "torch7_src:relative", {**torch, "torch7_src": "torch"},
            "torch7_src must be absolute path", "'torch'"),
        pre("torch7", "torch7_prefix:relative", {**torch, "torch7_prefix": "opt/torch"},
            "torch7_prefix must be absolute path"),
        pre("torch7", "torch7_build_log:relative", {**torch, "torch7_build_log": "build.log"},
            "torch7_build_log must be absolute path"),
        pre("torch7", "torch7_profile_script:relative", {**torch, "torch7_profile_script": "torch.sh"},
            "torch7_profile_script must be absolute path", "may also be empty"),
        pre("torch7", "torch7_th_link:relative", {**torch, "torch7_th_link": "bin/th"},
            "torch7_th_link must be absolute path", "may also be empty"),
        pre("torch7", "torch7_artifact_host_dir:relative", {**torch, "torch7_artifact_host_dir": "cache"},
            "torch7_artifact_host_dir must be absolute path"),
        pre("torch7", "torch7_jobs:0", {**torch, "torch7_jobs": 0},
            "torch7_jobs must be a whole number of parallel jobs, 1 or more", "not '0'"),
        pre("torch7", "torch7_min_free_mb:negative", {**torch, "torch7_min_free_mb": -5},
            "torch7_min_free_mb must be 0 (no check) or more MB", "not '-5'"),
        pre("torch7", "torch7_progress_interval:0", {**torch, "torch7_progress_interval": 0},
            "torch7_progress_interval must be 1 second or more"),
        pre("torch7", "torch7_build_timeout:5", {**torch, "torch7_build_timeout": 5},
            "torch7_build_timeout must be 60 seconds or more"),
        pre("char_rnn", "char_rnn_version:tag", {**char_rnn, "char_rnn_version": "v1.0"},
            "char_rnn_version must be a full 40-character commit SHA", "'v1.0'"),
        pre("char_rnn", "char_rnn_dataset:traversal", {**char_rnn, "char_rnn_dataset": "../etc"},
            "char_rnn_dataset '../etc' must be a plain folder name"),
        pre("char_rnn", "char_rnn_dataset:space", {**char_rnn, "char_rnn_dataset": "my text"},
            "char_rnn_dataset 'my text' must be a plain folder name"),
        pre("char_rnn", "char_rnn_dir:relative", {**char_rnn, "char_rnn_dir": "char-rnn"},
            "char_rnn_dir must be absolute path", "'char-rnn'"),
        pre("char_rnn", "char_rnn_home:relative", {**char_rnn, "char_rnn_home": "home"},
            "char_rnn_home must be absolute path"),
        pre("char_rnn", "char_rnn_batch_size:0", {**char_rnn, "char_rnn_batch_size": 0},
            "char_rnn_batch_size and char_rnn_seq_length must be whole numbers of 1 or more", "batch_size 0"),
        pre("char_rnn", "char_rnn_seq_length:negative", {**char_rnn, "char_rnn_seq_length": -1},
            "char_rnn_seq_length must be whole numbers of 1 or more", "seq_length -1"),
        pre("char_rnn", "char_rnn_train_frac:1.5", {**char_rnn, "char_rnn_train_frac": 1.5},
            "fractions in (0, 1]", "train_frac 1.5"),
        pre("char_rnn", "char_rnn_corpus_src:binary", {**char_rnn, "char_rnn_corpus_src": corpora["binary"]},
            f"corpus {corpora['binary']} is not text"),
        pre("char_rnn", "char_rnn_corpus_src:empty", {**char_rnn, "char_rnn_corpus_src": corpora["empty"]},
            f"corpus {corpora['empty']} is empty"),
        pre("char_rnn", "char_rnn_corpus_src:missing", {**char_rnn, "char_rnn_corpus_src": corpora["missing"]},
            f"corpus {corpora['missing']} does not exist"),
        pre("char_rnn", "char_rnn_corpus_src:directory", {**char_rnn, "char_rnn_corpus_src": corpora["directory"]},
            f"corpus {corpora['directory']} is a directory"),
        pre("char_rnn", "char_rnn_corpus_src:too big for LuaJIT", {**char_rnn, "char_rnn_corpus_src": corpora["huge"]},
            "more than char-rnn's loader can hold in LuaJIT's memory", "torch7_lua_flavour: LUA51"),
        pre("git_mirrors", "git_mirrors_url_rewrites:no url", {"git_mirrors_url_rewrites": [{"insteadof": "x"}]},
            "missing required arguments: url found in git_mirrors_url_rewrites"),
        pre("git_mirrors", "git_mirrors_url_rewrites:state", {"git_mirrors_url_rewrites": [
            {"url": "https://m/", "insteadof": "https://github.com/", "state": "gone"}]},
            "value of state must be one of: present, absent, got: gone found in git_mirrors_url_rewrites"),
    ]  # fmt: skip


def row_tasks(row: dict, index: int) -> dict:
    if row["kind"] == "role_spec":
        # what the validator reads (descriptions and defaults hold Jinja that would be templated)
        keys = ("type", "elements", "choices", "required", "options")
        spec = {name: {k: v for k, v in opt.items() if k in keys} for name, opt in role_options(row["role"]).items()}
        step = {"ansible.builtin.validate_argument_spec": {
            "argument_spec": spec, "provided_arguments": {row["name"]: row["value"]}}}  # fmt: skip
    elif row["kind"] == "module":
        step = {f"rnn_bootstrap.char_rnn.{row['module']}": row["args"]}
    else:
        role = {
            "name": f"rnn_bootstrap.char_rnn.{row['role']}",
            "tasks_from": "main" if row["role"] == "git_mirrors" else "preflight",
        }
        step = {"ansible.builtin.include_role": role, "vars": row["vars"]}
    step["name"] = f"row {index}"
    keep = {"ansible.builtin.set_fact": {"rows": f"{{{{ rows | combine({{'{index}': ansible_failed_result.msg}}) }}}}"}}
    return {"name": f"row {index}: {row['id']}", "block": [step], "rescue": [keep]}


@pytest.fixture(scope="module")
def outcome(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad-input")
    binary = tmp / "binary.txt"
    binary.write_bytes(bytes(range(256)) * 64)
    empty = tmp / "empty.txt"
    empty.write_bytes(b"")
    huge = tmp / "huge.txt"
    with open(huge, "wb") as handle:  # sparse: 13 GB by its size, nothing written, never read
        handle.truncate(13_000_000_000)
    (tmp / "a-directory").mkdir()
    corpora = {"binary": str(binary), "empty": str(empty), "huge": str(huge),
               "missing": str(tmp / "missing.txt"), "directory": str(tmp / "a-directory")}  # fmt: skip
    rows = generated_rows() + written_rows(corpora)
    play = {
        "hosts": "localhost",
        "gather_facts": False,
        "vars": {"rows": {}},
        "tasks": [
            *(row_tasks(row, i) for i, row in enumerate(rows)),
            {"name": "Hand the messages back", "ansible.builtin.copy": {
                "content": "{{ rows | to_json }}", "dest": str(tmp / "messages.json")}, "check_mode": False,
             "delegate_to": "localhost"},
        ],
    }  # fmt: skip
    (tmp / "play.yml").write_text(json.dumps([play]))
    inventory = tmp / "inventory.ini"
    inventory.write_text(f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    run = __import__("subprocess").run(
        ["ansible-playbook", "--check", "-i", str(inventory), str(tmp / "play.yml")],
        cwd=REPO, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    messages = json.loads((tmp / "messages.json").read_text())
    recap = run.stdout.split("PLAY RECAP")[-1]
    return {"rows": rows, "messages": messages, "recap": recap, "stdout": run.stdout}


ALL_IDS = [row["id"] for row in generated_rows()] + [
    row["id"] for row in written_rows(dict.fromkeys(("binary", "empty", "huge", "missing", "directory"), "/x"))
]


@pytest.mark.parametrize("row_id", ALL_IDS)
def test_bad_input_fails_naming_the_variable_and_what_is_allowed(outcome, row_id):
    index = next(i for i, row in enumerate(outcome["rows"]) if row["id"] == row_id)
    row = outcome["rows"][index]
    message = outcome["messages"].get(str(index))
    assert message is not None, f"{row_id}: the bad value was accepted"
    message = " ".join(str(message).split())
    for expected in row["expect"]:
        assert expected in message, f"{row_id}: {expected!r} not in {message!r}"


def test_bad_input_changes_nothing(outcome):
    # the only change is the messages file the test itself writes (check_mode: false)
    assert "changed=1 " in outcome["recap"], outcome["recap"]
