"""roles/bundle/files/git_mirrors.py: where a URL's mirror goes, and submodule URLs read from a commit."""

from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("git_mirrors", REPO / "roles/bundle/files/git_mirrors.py")
assert spec and spec.loader
gm = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gm)


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("https://github.com/torch/distro.git", "github.com/torch/distro.git"),
        ("https://github.com/torch/graph", "github.com/torch/graph.git"),
        ("git://127.0.0.1:9418/github.com/torch/nn.git/", "127.0.0.1:9418/github.com/torch/nn.git"),
        ("https://user@git.example.com/a/b", "git.example.com/a/b.git"),
    ],
)
def test_mirror_path(url: str, path: str) -> None:
    assert gm.mirror_path(Path("/b"), url) == Path("/b") / path


def test_mirror_path_refuses_a_bare_path() -> None:
    with pytest.raises(ValueError, match="scheme and host"):
        gm.mirror_path(Path("/b"), "/srv/repo.git")


def test_submodules_resolve_relative_urls_and_name_missing_ones(tmp_path: Path) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}  # fmt: skip

    def git(*args: str, data: str | None = None) -> str:
        return subprocess.run(
            ["git", *args], cwd=tmp_path, env=env, input=data, capture_output=True, text=True, check=True
        ).stdout.strip()

    git("init", "-q", "--bare", ".")
    modules = git("hash-object", "-w", "--stdin", data='[submodule "a"]\n\tpath = pkg/a\n\turl = ../a.git\n')
    sha_a, sha_b = "1" * 40, "2" * 40
    pkg = git("mktree", "--missing", data=f"160000 commit {sha_a}\ta\n160000 commit {sha_b}\tb\n")
    tree = git("mktree", data=f"100644 blob {modules}\t.gitmodules\n040000 tree {pkg}\tpkg\n")
    commit = git("commit-tree", tree, "-m", "x")
    found, error = gm.submodules(tmp_path, commit, "https://github.com/torch/distro.git")
    assert found == [("pkg/a", "https://github.com/torch/a.git", sha_a)]
    assert "gitlink pkg/b" in error and "no URL in .gitmodules" in error
