"""plugins/module_utils/ssh_host_keys.py: host keys from cloud-init console output, and the known_hosts file."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils import ssh_host_keys as hk

CONSOLE = Path(__file__).parent / "fixtures" / "console"
EXPECTED = json.loads((CONSOLE / "expected.json").read_text())
# moto's GetConsoleOutput text: a boot log with no keys block (an instance still booting looks like this)
MOTO_SAMPLE = "Linux version 2.6.16-xenU (builder@patchbat.amazonsa)\nBIOS-provided physical RAM map:\n"


@pytest.mark.parametrize("crlf", [False, True])  # EC2's serial console ends its lines in CR LF
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_console_shapes(name: str, crlf: bool) -> None:
    text = (CONSOLE / name).read_bytes().decode()
    if crlf:
        text = text.replace("\n", "\r\n")
    expected = EXPECTED[name]
    assert hk.parse_console(text) == ([tuple(k) for k in expected] if expected is not None else None)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_api_s_base64_output_is_decoded(name: str) -> None:
    raw = (CONSOLE / name).read_bytes()
    encoded = base64.b64encode(raw).decode()
    assert hk.console_text(encoded) == raw.decode()
    assert hk.parse_console(hk.console_text(encoded)) == hk.parse_console(raw.decode())


def test_plain_text_is_taken_as_it_is() -> None:
    text = (CONSOLE / "debian-12.txt").read_text()
    assert hk.console_text(text) == text
    assert hk.console_text(None) == "" and hk.console_text("") == ""
    assert hk.parse_console(hk.console_text(base64.b64encode(MOTO_SAMPLE.encode()).decode())) is None


def test_the_cut_rsa_line_and_keys_outside_the_block_are_not_taken() -> None:
    ubuntu = (CONSOLE / "ubuntu-24.04.txt").read_text()
    assert "ssh-rsa AAAA" in ubuntu  # there, but cut by the console
    assert [t for t, _b in hk.parse_console(ubuntu)] == ["ecdsa-sha2-nistp256", "ssh-ed25519"]
    debian = (CONSOLE / "debian-12.txt").read_text()
    user_key = debian.split("ci-info: ssh-ed25519 ")[1].split()[0]  # an authorized key printed before the block
    assert user_key not in [b for _t, b in hk.parse_console(debian)]


@pytest.mark.parametrize(
    "line",
    [
        "ssh-ed25519 AAAAB3NzaC1yc2EAAAADAQABAAABAQC root@x",  # an RSA blob under the ed25519 name
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHtOReNwl7HPAz5EUR root@x",  # cut short
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHtOReNwl7HPAz5EUR/6mRdACoNszPBcSS9tCUeot7CE!! root@x",  # not base64
        "ssh-foo AAAAC3NzaC1lZDI1NTE5AAAAIHtOReNwl7HPAz5EUR/6mRdACoNszPBcSS9tCUeot7CE root@x",  # unknown type
    ],
)
def test_malformed_key_lines_are_dropped(line: str) -> None:
    good = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHtOReNwl7HPAz5EUR/6mRdACoNszPBcSS9tCUeot7CE root@vm1"
    text = f"{hk.BEGIN}\n{line}\n{good}\n{hk.END}\n"
    assert hk.parse_console(text) == [tuple(good.split()[:2])]
    assert hk.parse_console(f"{hk.BEGIN}\n{line}\n{hk.END}\n") is None  # an empty block is not "no keys"


def test_fingerprint_matches_ssh_keygen(tmp_path: Path) -> None:
    if not shutil.which("ssh-keygen"):
        pytest.skip("ssh-keygen is not installed")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True)
    key_type, blob = (tmp_path / "k.pub").read_text().split()[:2]
    out = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(tmp_path / "k.pub")], capture_output=True, text=True, check=True
    ).stdout
    assert hk.fingerprint(blob) == out.split()[1]
    assert hk.valid_key(key_type, blob)


KEYS_A = [tuple(k) for k in EXPECTED["debian-12.txt"]]
KEYS_B = [tuple(k) for k in EXPECTED["two-boots.txt"]]


def test_known_hosts_add_keep_and_conflict() -> None:
    other = "# fleet known hosts\n|1|hashed= ssh-ed25519 AAAAC3Nz\n203.0.113.5 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5\n"
    text = hk.with_hosts(other, {"i-0aaa": KEYS_A}, {"i-0aaa": "203.0.113.10"})
    assert text.startswith(other)  # what was there stays as it was
    added = text[len(other) :].splitlines()
    assert added == [f"i-0aaa {t} {b} 203.0.113.10" for t, b in KEYS_A]
    assert hk.parse_known_hosts(text)["i-0aaa"] == KEYS_A
    assert hk.with_hosts(text, {"i-0aaa": list(reversed(KEYS_A))}) == text  # same keys, other order: no change
    assert hk.conflicts(text, {"i-0aaa": KEYS_A}) == {}
    clash = hk.conflicts(text, {"i-0aaa": KEYS_B, "i-0bbb": KEYS_B})
    assert list(clash) == ["i-0aaa"]
    assert clash["i-0aaa"]["now"] == [f"ssh-ed25519 {hk.fingerprint(KEYS_B[0][1])}"]
    assert len(clash["i-0aaa"]["recorded"]) == 3
    assert hk.conflicts(text, {"i-0aaa": KEYS_A[:2]}) != {}  # a key gone is a change too
    assert hk.without_hosts(text, {"i-0aaa"}) == other
    assert hk.without_hosts("i-0aaa ssh-ed25519 AAAA\n", {"i-0aaa"}) == ""


def test_openssh_reads_the_file(tmp_path: Path) -> None:
    """ssh-keygen finds every key under the instance ID, the name SSH looks up with HostKeyAlias."""
    if not shutil.which("ssh-keygen"):
        pytest.skip("ssh-keygen is not installed")
    path = tmp_path / "known_hosts"
    path.write_text(hk.with_hosts("", {"i-0aaa": KEYS_A, "i-0bbb": KEYS_B}, {"i-0aaa": "203.0.113.10"}))
    found = subprocess.run(["ssh-keygen", "-F", "i-0aaa", "-f", str(path)], capture_output=True, text=True, check=False)
    assert found.returncode == 0
    assert sorted(line.split()[1] for line in found.stdout.splitlines() if not line.startswith("#")) == sorted(
        t for t, _b in KEYS_A
    )
    listed = subprocess.run(["ssh-keygen", "-l", "-f", str(path)], capture_output=True, text=True, check=True).stdout
    assert sorted(line.split()[1] for line in listed.splitlines()) == sorted(
        hk.fingerprint(b) for _t, b in KEYS_A + KEYS_B
    )
