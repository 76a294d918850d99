"""Tags and targeting: what `--tags` / `--skip-tags` select, and rnn_bootstrap_hosts.

`ansible-playbook --list-tasks` lists a dynamic include (include_tasks, include_role) but not the
tasks inside it, and a tag on the include reaches those tasks only through `apply`. So besides
--list-tasks on the real playbooks, the roles run for real as a *skeleton*: the same playbooks,
roles, task files, blocks, includes, imports and tags, with every other task replaced by a debug
that names its role and file, every `when` and loop dropped, on localhost. What the skeleton runs
for a tag is what Ansible's own tag selection picks from the real files, dynamic includes included.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
INCLUDES = {
    "ansible.builtin.include_tasks",
    "ansible.builtin.import_tasks",
    "ansible.builtin.include_role",
    "ansible.builtin.import_role",
}
# Values for the templated names of included files (one of each kind is enough for tags).
TEMPLATE_VALUES = {"ansible_facts.pkg_mgr": "apt", "__torch7_store_kind": "dir"}
PLAYBOOKS = [
    "site", "train", "status", "sample", "fetch_checkpoints", "sweep", "leaderboard", "provision", "teardown",
]  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}


def _resolve(name: str) -> str:
    return re.sub(r"\{\{\s*([\w.]+)\s*\}\}", lambda m: TEMPLATE_VALUES[m.group(1)], name)


def _skeleton_tasks(tasks: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    """TASKS with only their structure and tags; WHERE ('role/file.yml') names the debug tasks."""
    out = []
    for task in tasks:
        new: dict[str, Any] = {"name": task.get("name", "?")}
        if "tags" in task:
            new["tags"] = task["tags"]
        if "block" in task:
            new["block"] = _skeleton_tasks(task["block"], where)
            if "always" in task:
                new["always"] = _skeleton_tasks(task["always"], where)
            # rescue runs only on a failure, which the skeleton has none of.
        elif action := next((k for k in task if k in INCLUDES), None):
            args = task[action]
            if isinstance(args, str):
                args = {"name" if action.endswith("_role") else "file": args}
            args = dict(args)
            if "file" in args:
                args["file"] = _resolve(args["file"])
                if args["file"] == where.split("/", 1)[1]:
                    continue  # a file that includes itself (a polling loop): once is enough
            new[action] = args
        else:
            new["ansible.builtin.debug"] = {"msg": where}
        out.append(new)
    return out


def _skeleton_collection(root: Path) -> Path:
    dest = root / "ansible_collections" / "rnn_bootstrap" / "char_rnn"
    for path in (REPO / "roles").glob("*/tasks/*.yml"):
        role, name = path.parts[-3], path.name
        target = dest / "roles" / role / "tasks" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(yaml.safe_dump(_skeleton_tasks(yaml.safe_load(path.read_text()), f"{role}/{name}")))
    (dest / "playbooks").mkdir(parents=True)
    for name in PLAYBOOKS:
        plays = yaml.safe_load((REPO / "playbooks" / f"{name}.yml").read_text())
        for play in plays:
            play["gather_facts"] = False
            play.pop("vars", None)
            for key in ("pre_tasks", "tasks", "post_tasks"):
                if key in play:
                    play[key] = _skeleton_tasks(play[key], f"{name}.yml/{key}")
        (dest / "playbooks" / f"{name}.yml").write_text(yaml.safe_dump(plays))
    # task files the playbooks include (sweep.yml's tasks/sweep_run.yml)
    for path in (REPO / "playbooks" / "tasks").glob("*.yml"):
        target = dest / "playbooks" / "tasks" / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(yaml.safe_dump(_skeleton_tasks(yaml.safe_load(path.read_text()), f"tasks/{path.name}")))
    (dest / "galaxy.yml").write_text(
        yaml.safe_dump({"namespace": "rnn_bootstrap", "name": "char_rnn", "version": "0.0.0"})
    )
    return root


_runs: dict[tuple[str, ...], set[str]] = {}


@pytest.fixture(scope="module")
def skeleton(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = _skeleton_collection(tmp_path_factory.mktemp("skeleton"))
    # Every run the tests below make, a few at a time (each is a whole ansible-playbook start-up).
    runs = {("site",)} | {("site", *args) for args, _expected in SITE_CASES} | {("site", "--tags", "provision")}
    for playbook, tag, _expected in PLAYBOOK_CASES:
        runs |= {(playbook,), (playbook, "--tags", tag), (playbook, "--skip-tags", tag)}
    with ThreadPoolExecutor(max_workers=4) as pool:
        for run, ran in zip(runs, pool.map(lambda run: _run_skeleton(root, *run), runs), strict=True):
            _runs[run] = ran
    return root


def run_skeleton(skeleton: Path, playbook: str, *args: str) -> set[str]:
    """The role files (role/file.yml) whose tasks ran for PLAYBOOK with ARGS."""
    if (playbook, *args) not in _runs:
        _runs[(playbook, *args)] = _run_skeleton(skeleton, playbook, *args)
    return _runs[(playbook, *args)]


def _run_skeleton(skeleton: Path, playbook: str, *args: str) -> set[str]:
    env = {
        **_env(),
        "ANSIBLE_COLLECTIONS_PATH": str(skeleton),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
        "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
    }
    env.pop("ANSIBLE_CONFIG")
    run = subprocess.run(
        ["ansible-playbook", "-i", "localhost,", "-c", "local", f"rnn_bootstrap.char_rnn.{playbook}", *args],
        cwd=skeleton,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(run.stdout)
    return {
        host["msg"]
        for play in result["plays"]
        for task in play["tasks"]
        for host in task["hosts"].values()
        if "msg" in host and not host.get("skipped")
    }


def files(*names: str) -> set[str]:
    """'role/file.yml' for each NAME: a role (all its task files) or 'role/file.yml'."""
    out = set()
    for name in names:
        role, _slash, file = name.partition("/")
        out |= {f"{role}/{path.name}" for path in (REPO / "roles" / role / "tasks").glob(file or "*.yml")}
    return out


def assert_selects(skeleton: Path, playbook: str, args: list[str], expected: set[str]) -> None:
    """Compare with EXPECTED, less the files an untagged run does not reach either (files of
    imports only, other stores' files)."""
    assert run_skeleton(skeleton, playbook, *args) == expected & run_skeleton(skeleton, playbook)


def test_skeleton_runs_every_role_file_without_tags(skeleton: Path) -> None:
    """The baseline the tag tests compare with: untagged, site.yml reaches these files."""
    ran = run_skeleton(skeleton, "site")
    assert (
        "torch7/artifact-install.yml" in ran and "torch7/build-poll.yml" in ran and "system_deps/setup-apt.yml" in ran
    )
    assert "torch7/artifact-lookup-dir.yml" in ran and "torch7/artifact-publish-dir.yml" in ran


# python_bootstrap and site.yml's fact gathering are tagged `always`.
ALWAYS = files("python_bootstrap") | {"site.yml/pre_tasks"}
SYSTEM_DEPS = files(
    "system_deps/main.yml",
    "system_deps/preflight.yml",
    "system_deps/setup-apt.yml",
    "system_deps/openblas-source.yml",
)
TORCH7_COMMON = files(
    "torch7/main.yml", "torch7/preflight.yml", "torch7/artifact-plan.yml", "torch7/artifact-lookup-dir.yml"
)
TORCH7_BUILD = files(
    "torch7/build.yml",
    "torch7/build-poll.yml",
    "torch7/cmake.yml",
    "torch7/cmake3.yml",
    "torch7/artifact-publish-dir.yml",
)
TORCH7_INSTALL = files("torch7/artifact-install.yml", "torch7/artifact-transfer.yml", "torch7/artifact-download-s3.yml")
# torch7's build and char_rnn's install clone through git_mirrors' clone entry point (include_role).
CLONE = files("git_mirrors/clone.yml")


SITE_CASES = [
    (["--tags", "system_deps"], ALWAYS | SYSTEM_DEPS),
    (["--tags", "git_mirrors"], ALWAYS | files("git_mirrors/main.yml")),
    (["--tags", "luarocks"], ALWAYS | files("luarocks")),
    # torch7's build brings the toolchain through include_role system_deps: inside the phase.
    (["--tags", "torch7"], ALWAYS | files("torch7") | SYSTEM_DEPS | CLONE),
    (["--tags", "torch7:build"], ALWAYS | TORCH7_COMMON | TORCH7_BUILD | SYSTEM_DEPS | CLONE),
    (["--tags", "torch7:install"], ALWAYS | TORCH7_COMMON | TORCH7_INSTALL),
    (["--tags", "char_rnn"], ALWAYS | files("char_rnn") | CLONE),
    (
        ["--tags", "char_rnn:install"],
        ALWAYS | files("char_rnn/main.yml", "char_rnn/preflight.yml", "char_rnn/install.yml") | CLONE,
    ),
    (
        ["--tags", "char_rnn:corpus"],
        ALWAYS | files("char_rnn/main.yml", "char_rnn/preflight.yml", "char_rnn/corpus.yml"),
    ),
    (["--tags", "torch7,char_rnn"], ALWAYS | files("torch7", "char_rnn") | SYSTEM_DEPS | CLONE),
    (
        ["--skip-tags", "torch7,python_bootstrap"],
        {"site.yml/pre_tasks"} | SYSTEM_DEPS | files("git_mirrors", "luarocks", "char_rnn"),
    ),
    (
        ["--skip-tags", "torch7"],
        ALWAYS | SYSTEM_DEPS | files("git_mirrors", "luarocks", "char_rnn"),
    ),
    (
        ["--tags", "provision", "--skip-tags", "char_rnn:corpus"],
        ALWAYS | SYSTEM_DEPS | files("git_mirrors", "luarocks", "torch7", "char_rnn") - files("char_rnn/corpus.yml"),
    ),
]


@pytest.mark.parametrize(("args", "expected"), SITE_CASES, ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_site_tags_select_the_role_files(skeleton: Path, args: list[str], expected: set[str]) -> None:
    assert_selects(skeleton, "site", args, expected)


def test_untagged_site_reaches_the_same_files_as_provision(skeleton: Path) -> None:
    assert run_skeleton(skeleton, "site") == run_skeleton(skeleton, "site", "--tags", "provision")


PLAYBOOK_CASES = [
    ("train", "train", files("char_rnn_train")),
    ("train", "char_rnn_train", files("char_rnn_train")),
    # the sweep applies the role once per run, through playbooks/tasks/sweep_run.yml
    ("sweep", "sweep", files("char_rnn_train") | {"sweep.yml/tasks"}),
    ("provision", "ec2_fleet", files("ec2_fleet") - files("ec2_fleet/teardown.yml")),
    ("teardown", "ec2_fleet", files("ec2_fleet/teardown.yml")),
]


@pytest.mark.parametrize(("playbook", "tag", "expected"), PLAYBOOK_CASES)
def test_playbook_tags(skeleton: Path, playbook: str, tag: str, expected: set[str]) -> None:
    assert_selects(skeleton, playbook, ["--tags", tag], expected)
    assert run_skeleton(skeleton, playbook, "--skip-tags", tag) == set()


def list_tasks(*args: str) -> list[tuple[str, set[str]]]:
    """(task, tags) of `ansible-playbook --list-tasks` on the real site.yml."""
    run = subprocess.run(
        ["ansible-playbook", "-i", "localhost,", "--list-tasks", "playbooks/site.yml", *args],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    tasks = []
    for line in run.stdout.splitlines():
        match = re.match(r"\s{6}(.+?)\tTAGS: \[(.*)\]$", line)
        if match:
            # "rnn_bootstrap.char_rnn.torch7 : Check ..." -> "torch7 : Check ..."
            name = re.sub(r"^rnn_bootstrap\.char_rnn\.", "", match.group(1))
            tasks.append((name, {t.strip() for t in match.group(2).split(",") if t.strip()}))
    return tasks


def test_list_tasks_torch7_build_phase() -> None:
    """The real site.yml: the build phase lists torch7's checks, plan, build and facts, not the install."""
    tasks = list_tasks("--tags", "torch7:build")
    names = [name for name, _tags in tasks]
    assert any(name.startswith("torch7 : Clone torch/distro and build Torch7") for name in names), names
    assert any(name.startswith("torch7 : Decide per host") for name in names), names
    assert not any("Install the artifact" in name for name in names), names
    # Ansible tags every role's argument validation `always`, and site.yml its fact gathering;
    # nothing else of another role is listed.
    roles = {name.split(" : ")[0] for name in names if "Validating arguments against arg spec" not in name}
    assert roles == {"python_bootstrap", "torch7", "Gather facts"}, roles
    assert all("torch7:build" in tags or "always" in tags for _name, tags in tasks), tasks


def test_list_tasks_skip_tags_removes_the_role() -> None:
    every = list_tasks()
    skipped = list_tasks("--skip-tags", "torch7,char_rnn:corpus")
    assert any(name.startswith("torch7 :") for name, _tags in every)
    assert not any(name.startswith("torch7 :") for name, _tags in skipped)
    corpus = {name for name, tags in every if "char_rnn:corpus" in tags and "char_rnn:install" not in tags}
    assert corpus, every
    assert not corpus & {name for name, _tags in skipped}
    assert {name for name, _tags in skipped} >= {name for name, tags in every if "char_rnn:install" in tags}


def test_every_role_task_carries_its_role_tag() -> None:
    for name, tags in list_tasks():
        role = name.split(" : ")[0] if " : " in name else None
        if role:
            assert role in tags, (name, tags)


def test_rnn_bootstrap_hosts_targets_every_playbook(tmp_path: Path) -> None:
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("localhost\n[gpu]\ngpu1\ngpu2\n[cpu]\ncpu1\n")

    def hosts(*args: str) -> dict[str, list[str]]:
        """playbook -> the hosts of its plays, for every playbook at once."""
        run = subprocess.run(
            ["ansible-playbook", "-i", str(inventory), "--list-hosts", *args,
             *(f"playbooks/{name}.yml" for name in PLAYBOOKS)],
            cwd=REPO, env=_env(), capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert run.returncode == 0, run.stdout + run.stderr
        found: dict[str, set[str]] = {}
        for line in run.stdout.splitlines():
            if line.startswith("playbook: "):
                current = found.setdefault(Path(line.split()[1]).stem, set())
            elif line.startswith("      "):
                current.add(line.strip())
        return {name: sorted(names) for name, names in found.items()}

    assert hosts("-e", "rnn_bootstrap_hosts=gpu") == {name: ["gpu1", "gpu2"] for name in PLAYBOOKS}
    # Playbooks for the hosts default to all; the EC2 ones run on the controller.
    every = ["cpu1", "gpu1", "gpu2", "localhost"]
    assert hosts() == {name: ["localhost"] if name in ("provision", "teardown") else every for name in PLAYBOOKS}


def test_the_skeleton_would_notice_a_missing_apply(tmp_path: Path) -> None:
    """The mechanism the tests rely on: a tag on include_tasks without apply selects only the include."""
    tasks = [{"name": "inc", "ansible.builtin.include_tasks": "inner.yml", "tags": ["phase"]}]
    (tmp_path / "inner.yml").write_text(yaml.safe_dump([{"name": "inner", "ansible.builtin.debug": {"msg": "inner"}}]))
    (tmp_path / "play.yml").write_text(yaml.safe_dump([{"hosts": "localhost", "gather_facts": False, "tasks": tasks}]))
    env = {**_env(), "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json", "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1"}
    run = subprocess.run(
        ["ansible-playbook", "-i", "localhost,", "-c", "local", "play.yml", "--tags", "phase"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "inner" not in {t["task"]["name"] for p in json.loads(run.stdout)["plays"] for t in p["tasks"]}
    assert shutil.which("ansible-playbook")


def test_torch7_install_phase_on_a_host_that_must_build_says_which_tag(tmp_path: Path) -> None:
    """For real on localhost: with no store every host builds, and `--tags torch7:install` leaves
    the build out. The role's checks, then a failure naming the tags that build (no build runs)."""
    play = [{"hosts": "localhost", "gather_facts": False, "roles": [{"role": "rnn_bootstrap.char_rnn.torch7"}]}]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play))
    run = subprocess.run(
        ["ansible-playbook", "-i", "localhost,", "-c", "local", "play.yml", "--tags", "torch7:install",
         "-e", "torch7_artifact_store=''"],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert run.returncode == 2, run.stdout + run.stderr
    assert "has to build Torch7" in run.stdout and "--tags torch7 or --tags torch7:build" in run.stdout, run.stdout
    assert "Refuse an unpinned torch/distro" in run.stdout
    assert "torch7 : Clone torch/distro" not in run.stdout and "Build Torch7 in the background" not in run.stdout


def test_a_role_tag_alone_runs_with_facts() -> None:
    """The real site.yml with one role's tag, for real in check mode on this machine: the roles
    need ansible_facts, so fact gathering must run under any tag (it did not before)."""
    run = subprocess.run(
        ["ansible-playbook", "-i", "localhost,", "-c", "local", "site.yml", "--tags", "system_deps", "--check",
         "-e", f"ansible_python_interpreter={sys.executable}"],
        cwd=REPO, env=_env(), capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "TASK [Gather facts]" in run.stdout
    assert "system_deps : Fail on a distribution or release this collection does not support" in run.stdout
