"""The roles' guards, run for real with ansible-playbook on localhost.

- system_deps refuses unsupported or end-of-life distributions at once, naming the supported ones;
- char_rnn never overwrites a different corpus already on a host, and refuses unusable corpora.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from localplay import playbook


def failures(result: dict) -> list[str]:
    return [
        host["msg"]
        for play in result["plays"]
        for task in play["tasks"]
        for host in task["hosts"].values()
        if host.get("failed")
    ]


def preflight(distribution: str, version: str) -> list[dict]:
    """VERSION as the facts give it: "12.8", or "forky/sid" on Debian testing (codename first)."""
    return [
        {
            "hosts": "localhost",
            "gather_facts": False,
            "vars": {
                "ansible_facts": {
                    "distribution": distribution,
                    "distribution_version": version,
                    "distribution_major_version": version.split(".")[0],
                    "distribution_release": version.split("/")[0] if "/" in version else "",
                }
            },
            "tasks": [
                {
                    "ansible.builtin.include_role": {
                        "name": "rnn_bootstrap.char_rnn.system_deps",
                        "tasks_from": "preflight",
                    }
                }
            ],
        }
    ]


@pytest.mark.parametrize(
    ("distribution", "version", "supported"),
    [
        ("Debian", "12.8", True),
        ("Debian", "13.1", True),
        ("Debian", "forky/sid", True),  # testing, Debian 14 to be
        ("Debian", "sid", False),  # unstable is not a target
        ("Ubuntu", "26.04", True),
        ("Rocky", "10.0", True),
        ("Amazon", "2023", True),
        ("SLES", "15.6", True),
        ("openSUSE Leap", "16.0", True),
        ("Debian", "11.11", False),  # end of life
        ("Ubuntu", "20.04", False),  # end of life
        ("Amazon", "2", False),  # end of life
        ("SLES", "15.5", False),  # before SP6
        ("CentOS", "7.9", False),
        ("Gentoo", "2.17", False),
    ],
)
def test_system_deps_supports_exactly_the_targets(tmp_path, distribution, version, supported):
    result = playbook(tmp_path, preflight(distribution, version))
    failed = failures(result)
    if supported:
        assert failed == []
    else:
        assert len(failed) == 1
        assert f"{distribution} {version} is not supported" in failed[0]
        assert "Supported: Debian 12/13 and testing (forky), Ubuntu 22.04/24.04/26.04" in failed[0]


def corpus_play(char_rnn_dir: Path, src: Path, **extra) -> list[dict]:
    variables = {
        "char_rnn_dir": str(char_rnn_dir),
        "char_rnn_dataset": "mytext",
        "char_rnn_corpus_src": str(src),
        "char_rnn_user": "root",
        "char_rnn_group": "root",
        "char_rnn_batch_size": 10,
        "char_rnn_seq_length": 20,
        **extra,
    }
    preflight_then_corpus = [
        {"ansible.builtin.include_role": {"name": "rnn_bootstrap.char_rnn.char_rnn", "tasks_from": name}}
        for name in ("preflight", "corpus")
    ]
    return [{"hosts": "localhost", "gather_facts": False, "vars": variables, "tasks": preflight_then_corpus}]


@pytest.fixture
def corpus_dirs(tmp_path):
    char_rnn_dir = tmp_path / "char-rnn"
    (char_rnn_dir / "data" / "mytext").mkdir(parents=True)
    src = tmp_path / "new.txt"
    src.write_text("Now is the winter of our discontent.\n" * 100)
    return char_rnn_dir, src, char_rnn_dir / "data" / "mytext" / "input.txt"


def test_corpus_is_deployed_then_left_alone(tmp_path, corpus_dirs):
    char_rnn_dir, src, dest = corpus_dirs
    first = playbook(tmp_path, corpus_play(char_rnn_dir, src))
    assert failures(first) == [] and dest.read_text() == src.read_text()
    assert first["stats"]["localhost"]["changed"] == 1
    again = playbook(tmp_path, corpus_play(char_rnn_dir, src))
    assert failures(again) == [] and again["stats"]["localhost"]["changed"] == 0


def test_a_different_corpus_on_the_host_is_never_overwritten(tmp_path, corpus_dirs):
    char_rnn_dir, src, dest = corpus_dirs
    dest.write_text("the user's own corpus, not to be lost\n" * 100)
    result = playbook(tmp_path, corpus_play(char_rnn_dir, src))
    [message] = failures(result)
    assert "differs from" in message and "char_rnn_corpus_replace=true" in message
    assert dest.read_text().startswith("the user's own corpus")


def test_replace_keeps_a_backup(tmp_path, corpus_dirs):
    char_rnn_dir, src, dest = corpus_dirs
    dest.write_text("the user's own corpus, not to be lost\n" * 100)
    result = playbook(tmp_path, corpus_play(char_rnn_dir, src, char_rnn_corpus_replace=True))
    assert failures(result) == []
    assert dest.read_text() == src.read_text()
    backups = [p for p in dest.parent.iterdir() if p.name.startswith("input.txt.") and p != dest]
    assert len(backups) == 1 and backups[0].read_text().startswith("the user's own corpus")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "is empty"),
        ("tiny\n", "needs at least 400 bytes"),
        (None, "does not exist"),
    ],
)
def test_unusable_corpus_fails_before_touching_the_host(tmp_path, corpus_dirs, content, message):
    char_rnn_dir, src, dest = corpus_dirs
    if content is None:
        src.unlink()
    else:
        src.write_text(content)
    [failed] = failures(playbook(tmp_path, corpus_play(char_rnn_dir, src)))
    assert message in failed
    assert not dest.exists()


def test_a_users_corpus_may_not_replace_char_rnns_tinyshakespeare(tmp_path, corpus_dirs):
    char_rnn_dir, src, _dest = corpus_dirs
    [failed] = failures(playbook(tmp_path, corpus_play(char_rnn_dir, src, char_rnn_dataset="tinyshakespeare")))
    assert "give your corpus its own" in failed
