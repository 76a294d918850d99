# Copyright: rnn_bootstrap maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""SSH host keys from an EC2 instance's console output, and a known_hosts file keyed by instance ID.

cloud-init's ``keys_to_console`` module prints the instance's public host keys on the serial
console between ``-----BEGIN SSH HOST KEY KEYS-----`` and ``-----END SSH HOST KEY KEYS-----``;
EC2's GetConsoleOutput returns that console (base64-encoded). The lines can carry a prefix
(``[   12.345678] ``, ``ci-info: ``, ``<14>Jun  6 09:19:36 cloud-init: ``, ``ec2: ``), end in
CR LF, and have other console messages between them; a key is only taken when its base64 blob
is a whole public key of the type the line names (a line the console cut is dropped).
Pure Python (standard library only).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct

BEGIN = "-----BEGIN SSH HOST KEY KEYS-----"
END = "-----END SSH HOST KEY KEYS-----"
KEY_TYPES = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
    "ssh-dss",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)
_TYPES = "|".join(re.escape(t) for t in KEY_TYPES)
KEY_RE = re.compile(r"(?:^|[\s:])(?P<type>" + _TYPES + r")\s+(?P<blob>AAAA[A-Za-z0-9+/]+={0,3})(?=\s|$)")


def console_text(output: str | bytes | None) -> str:
    """The console text of GetConsoleOutput's ``Output``: base64-decoded when it is base64, else as given."""
    if not output:
        return ""
    raw = output.encode("ascii", "replace") if isinstance(output, str) else output
    compact = b"".join(raw.split())
    try:
        decoded = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        decoded = None
    if decoded is not None and compact and BEGIN.encode() not in raw:
        return decoded.decode("utf-8", "replace")
    return raw.decode("utf-8", "replace")


def blob_fields(blob: str) -> list[bytes] | None:
    """The length-prefixed strings a public key blob is made of (RFC 4253 6.6), or None when it is not that."""
    try:
        data = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        return None
    fields, offset = [], 0
    while offset < len(data):
        if offset + 4 > len(data):
            return None
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        offset += 4
        if offset + length > len(data):
            return None
        fields.append(data[offset : offset + length])
        offset += length
    return fields


# How many strings (mpints count as strings) each key type's blob holds: a blob cut short or run into
# the next line does not have them.
_FIELD_COUNTS = {
    "ssh-ed25519": 2,
    "ecdsa-sha2-nistp256": 3,
    "ecdsa-sha2-nistp384": 3,
    "ecdsa-sha2-nistp521": 3,
    "ssh-rsa": 3,
    "ssh-dss": 5,
    "sk-ssh-ed25519@openssh.com": 3,
    "sk-ecdsa-sha2-nistp256@openssh.com": 4,
}


def valid_key(key_type: str, blob: str) -> bool:
    """Whether ``blob`` is a whole public key of ``key_type`` (its own type name, all its fields, nothing more)."""
    fields = blob_fields(blob)
    if not fields or fields[0] != key_type.encode() or len(fields) != _FIELD_COUNTS[key_type]:
        return False
    return not (key_type.endswith("ed25519") and len(fields[1]) != 32)


def fingerprint(blob: str) -> str:
    """OpenSSH's SHA256 fingerprint of a public key blob (as ``ssh-keygen -l`` prints it)."""
    digest = hashlib.sha256(base64.b64decode(blob)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def parse_console(text: str) -> list[tuple[str, str]] | None:
    """The host keys (type, base64 blob) of the last complete keys block, or None when there is none yet.

    A block whose END has not been printed yet (the console is still being written, or cut) is not
    taken: the keys could be incomplete. Duplicates are dropped; the order is the console's.
    """
    blocks: list[list[tuple[str, str]]] = []
    current: list[tuple[str, str]] | None = None
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if BEGIN in line:
            current = []
        elif END in line:
            if current:
                blocks.append(current)
            current = None
        elif current is not None:
            match = KEY_RE.search(line)
            if match and valid_key(match.group("type"), match.group("blob")):
                key = (match.group("type"), match.group("blob"))
                if key not in current:
                    current.append(key)
    return blocks[-1] if blocks else None


# ----------------------------------------------------------------------------- known_hosts


def parse_known_hosts(text: str) -> dict[str, list[tuple[str, str]]]:
    """Keys per host name of a known_hosts file's plain lines (``host[,host] type blob [comment]``).

    Hashed names, markers (@cert-authority, @revoked) and comments are left alone: they are kept
    as they are when the file is rewritten, and never matched.
    """
    entries: dict[str, list[tuple[str, str]]] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 3 or fields[0].startswith(("#", "@", "|")):
            continue
        for host in fields[0].split(","):
            entries.setdefault(host, [])
            if (fields[1], fields[2]) not in entries[host]:
                entries[host].append((fields[1], fields[2]))
    return entries


def conflicts(text: str, found: dict[str, list[tuple[str, str]]]) -> dict[str, dict[str, list[str]]]:
    """The hosts of ``found`` already in ``text`` with other keys: {host: {recorded: [...], now: [...]}}.

    The keys are given as ``type fingerprint``, for a message a person can compare with ssh-keygen -l.
    """
    known = parse_known_hosts(text)
    out = {}
    for host, keys in found.items():
        if host in known and set(known[host]) != set(keys):
            out[host] = {
                "recorded": [f"{t} {fingerprint(b)}" for t, b in known[host]],
                "now": [f"{t} {fingerprint(b)}" for t, b in keys],
            }
    return out


def _lines_without(text: str, hosts: set[str]) -> list[str]:
    kept = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3 and not fields[0].startswith(("#", "@", "|")) and set(fields[0].split(",")) & hosts:
            continue
        kept.append(line)
    return kept


def with_hosts(text: str, found: dict[str, list[tuple[str, str]]], comments: dict[str, str] | None = None) -> str:
    """``text`` with the keys of ``found`` recorded (hosts not yet in it added; the others left as they are)."""
    known = parse_known_hosts(text)
    lines = text.splitlines()
    for host in sorted(found):
        if host in known:
            continue
        comment = (comments or {}).get(host, "")
        for key_type, blob in found[host]:
            lines.append(f"{host} {key_type} {blob}" + (f" {comment}" if comment else ""))
    return "\n".join(lines) + "\n" if lines else ""


def without_hosts(text: str, hosts: set[str]) -> str:
    """``text`` without the lines of ``hosts``."""
    lines = _lines_without(text, hosts)
    return "\n".join(lines) + "\n" if lines else ""
