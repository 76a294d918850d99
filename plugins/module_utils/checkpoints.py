# Copyright: rnn_bootstrap maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Discover and check char-rnn checkpoints (``lm_<savefile>_epoch<E>_<V>.t7``).

Pure Python (standard library only); the optional ``torchfile`` package is used, when the
caller passes it in, to read the checkpoint's contents. Runs on the managed host, so it keeps
to Python 3.8 syntax at runtime.
"""

from __future__ import annotations

import glob
import math
import os
import re
import struct
from typing import Any, BinaryIO

# The one rule for a checkpoint's file name: train.lua writes
# string.format('%s/lm_%s_epoch%.2f_%.4f.t7', checkpoint_dir, savefile, epoch, val_loss)
# (Lua prints a NaN loss as nan or -nan). NAME_PATTERN is unanchored (case-insensitive inside) for
# patterns that find a name in a longer text: char_rnn_log's "saving checkpoint to <path>".
_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|nan|inf)"
NAME_PATTERN = rf"(?i:lm_(?P<savefile>.+)_epoch(?P<epoch>{_NUMBER})_(?P<val_loss>{_NUMBER})\.t7)"
NAME_RE = re.compile(rf"^{NAME_PATTERN}$")

# torch7 binary serialization (torch/File.lua): every object starts with an int32 type tag.
T7_NIL, T7_NUMBER, T7_STRING, T7_TABLE, T7_TORCH, T7_BOOLEAN = 0, 1, 2, 3, 4, 5
T7_FUNCTION, T7_LEGACY_RECUR_FUNCTION, T7_RECUR_FUNCTION = 6, 7, 8
_T7_FUNCTIONS = (T7_FUNCTION, T7_LEGACY_RECUR_FUNCTION, T7_RECUR_FUNCTION)
# Element sizes of torch storages; a tensor is written as its geometry followed by its storage.
_STORAGE_ITEM_SIZE = {
    "Byte": 1,
    "Char": 1,
    "Short": 2,
    "Half": 2,
    "Int": 4,
    "Float": 4,
    "Long": 8,
    "Double": 8,
}
_TORCH_CLASS_RE = re.compile(
    r"^torch\.(?:Cuda)?(?P<kind>Byte|Char|Short|Half|Int|Float|Long|Double)?(?P<what>Storage|Tensor)$"
)
_MAX_DEPTH = 200
_PAIR = struct.Struct("<iqiq")  # a number -> number table entry: tag, double, tag, double (doubles skipped as q)

# Options worth reporting from checkpoint.opt (all of them are scalars in char-rnn).
OPT_SCALAR_TYPES = (str, int, float, bool)


class T7FormatError(Exception):
    """The file is not a complete torch7 binary serialization."""


def parse_name(name: str) -> dict[str, Any] | None:
    """Split ``lm_<savefile>_epoch<E>_<V>.t7`` into savefile, epoch and val_loss (or None)."""
    match = NAME_RE.match(name)
    if not match:
        return None
    return {
        "savefile": match.group("savefile"),
        "epoch": float(match.group("epoch")),
        "val_loss": float(match.group("val_loss")),
    }


def checkpoint_iteration(
    epoch: float, ntrain: int, eval_val_every: int = 0, segment_total: int | None = None, after: int = 0
) -> int:
    """The iteration (counted from the start of its train.lua segment) of a checkpoint named with ``epoch``.

    The name keeps the epoch to two decimals, so ``epoch * ntrain`` is only near the iteration.
    train.lua saves at multiples of ``eval_val_every`` and at its last iteration (``segment_total``):
    when one of those (later than ``after``) fits the rounded epoch, the nearest is the answer.
    Otherwise the estimate itself, and never before ``after`` + 1 (a checkpoint announced after
    the progress line of iteration ``after``).
    """
    estimate = epoch * ntrain
    candidates = []
    if eval_val_every > 0:
        candidates.append(round(estimate / eval_val_every) * eval_val_every)
    if segment_total:
        candidates.append(segment_total)
    candidates = [c for c in candidates if c > after and abs(c / ntrain - epoch) <= 0.005 + 1e-9]
    if candidates:
        return min(candidates, key=lambda c: abs(c - estimate))
    return max(after + 1, round(estimate))


class _T7Walker:
    """Walk a torch7 binary stream without building it, seeking over storage data.

    Enough to tell a complete file from one cut short: every length is checked against the
    file size, so a truncated file fails instead of silently reading past its end.
    """

    def __init__(self, fh: BinaryIO, size: int) -> None:
        self.fh = fh
        self.size = size
        self.seen: set[int] = set()

    def _take(self, count: int) -> bytes:
        data = self.fh.read(count)
        if len(data) != count:
            raise T7FormatError(f"file ends at byte {self.size}: cut short (wanted {count} more bytes)")
        return data

    def _skip(self, count: int) -> None:
        if count < 0:
            raise T7FormatError(f"negative length {count}: not a torch7 binary file")
        target = self.fh.tell() + count
        if target > self.size:
            raise T7FormatError(f"file ends at byte {self.size}: cut short (data runs to byte {target})")
        self.fh.seek(target)

    def int32(self) -> int:
        return struct.unpack("<i", self._take(4))[0]

    def int64(self) -> int:
        return struct.unpack("<q", self._take(8))[0]

    def string(self) -> bytes:
        length = self.int32()
        if length < 0 or self.fh.tell() + length > self.size:
            raise T7FormatError(f"string of {length} bytes does not fit: file cut short or not torch7")
        return self._take(length)

    def obj(self, depth: int = 0) -> None:
        if depth > _MAX_DEPTH:
            raise T7FormatError("objects nested too deeply: not a torch7 binary file")
        tag = self.int32()
        if tag == T7_NIL:
            return
        if tag == T7_NUMBER:
            self._skip(8)
        elif tag in (T7_BOOLEAN,):
            self._skip(4)
        elif tag == T7_STRING:
            self.string()
        elif tag in (T7_TABLE, T7_TORCH) or tag in _T7_FUNCTIONS:
            index = self.int32()
            if index in self.seen:
                return  # a reference to an object written earlier
            self.seen.add(index)
            if tag == T7_TABLE:
                self._table(depth)
            elif tag == T7_TORCH:
                self._torch(depth)
            else:
                self._skip(self.int32())  # dumped bytecode
                self.obj(depth + 1)  # upvalues
        else:
            raise T7FormatError(f"unknown type tag {tag} at byte {self.fh.tell() - 4}: not a torch7 binary file")

    def _table(self, depth: int) -> None:
        count = self.int32()
        if count < 0 or count * 8 > self.size:
            raise T7FormatError(f"table of {count} entries does not fit: file cut short or not torch7")
        done = self._number_pairs(count) if count > 16 else 0
        for _entry in range(count - done):
            self.obj(depth + 1)
            self.obj(depth + 1)

    def _number_pairs(self, count: int) -> int:
        """Skip the leading number -> number entries of a table in bulk; return how many.

        char-rnn's train_losses holds one such entry per iteration (a million in a long run),
        far too many to walk one object at a time.
        """
        start = self.fh.tell()
        chunk = self.fh.read(min(count, (self.size - start) // _PAIR.size) * _PAIR.size)
        done = 0
        for key_tag, _key, value_tag, _value in _PAIR.iter_unpack(chunk):
            if key_tag != T7_NUMBER or value_tag != T7_NUMBER:
                break
            done += 1
        self.fh.seek(start + done * _PAIR.size)
        return done

    def _torch(self, depth: int) -> None:
        version = self.string()
        class_name = self.string() if version.startswith(b"V ") else version
        match = _TORCH_CLASS_RE.match(class_name.decode("latin-1"))
        if not match:
            self.obj(depth + 1)  # any other class (nn.*, nngraph): its fields as a table
            return
        if match.group("what") == "Storage":
            item = _STORAGE_ITEM_SIZE[match.group("kind") or "Float"]
            self._skip(self.int64() * item)
            return
        ndim = self.int32()
        if ndim < 0 or ndim > 64:
            raise T7FormatError(f"tensor with {ndim} dimensions: not a torch7 binary file")
        self._skip(8 * (2 * ndim + 1))  # sizes, strides, storage offset
        self.obj(depth + 1)  # the storage (or nil)


def check_t7(path: str) -> str | None:
    """Return None when ``path`` holds one complete torch7 binary object, else the reason."""
    try:
        size = os.path.getsize(path)
        if size == 0:
            return "empty file"
        with open(path, "rb") as fh:
            walker = _T7Walker(fh, size)
            walker.obj()
    except T7FormatError as exc:
        return str(exc)
    except (OSError, struct.error) as exc:
        return f"cannot read: {exc}"
    return None


def _text(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value


def _number(value: Any) -> Any:
    """Plain int/float (numpy scalars become Python numbers); NaN stays a float."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _get(table: Any, key: str) -> Any:
    if not isinstance(table, dict):
        return None
    if key.encode() in table:
        return table[key.encode()]
    return table.get(key)


def summarize_contents(data: Any) -> dict[str, Any]:
    """What a loaded checkpoint (torchfile's dict with byte keys) says about itself."""
    if not isinstance(data, dict):
        raise ValueError(f"checkpoint is a {type(data).__name__}, not a table")
    opt = _get(data, "opt")
    opt_out = {}
    if isinstance(opt, dict):
        for key, value in opt.items():
            value = _text(value)
            if isinstance(value, OPT_SCALAR_TYPES):
                opt_out[str(_text(key))] = value
    val_losses = _get(data, "val_losses")
    losses_out = {}
    if isinstance(val_losses, dict):
        for key, value in val_losses.items():
            losses_out[int(key)] = _number(value)
    elif isinstance(val_losses, list):  # torchfile turns {1=..,2=..} into a list
        losses_out = {n + 1: _number(v) for n, v in enumerate(val_losses)}
    vocab = _get(data, "vocab")
    iteration = _number(_get(data, "i"))
    return {
        "iteration": int(iteration) if isinstance(iteration, (int, float)) and math.isfinite(iteration) else None,
        "file_epoch": _number(_get(data, "epoch")),
        "file_val_loss": _number(_get(data, "val_loss")),
        "val_losses": dict(sorted(losses_out.items())),
        "opt": dict(sorted(opt_out.items())),
        "vocab_size": len(vocab) if isinstance(vocab, (dict, list)) else None,
    }


def read_contents(path: str, torchfile: Any) -> dict[str, Any]:
    """Load ``path`` with torchfile and summarize it; raises on any load failure."""
    return summarize_contents(torchfile.load(path))


def describe(path: str, torchfile: Any = None) -> dict[str, Any]:
    """One entry of checkpoint_info's ``checkpoints`` list."""
    name = os.path.basename(path)
    stat = os.stat(path)
    parsed = parse_name(name) or {"savefile": None, "epoch": None, "val_loss": None}
    entry: dict[str, Any] = {
        "path": path,
        "name": name,
        "savefile": parsed["savefile"],
        "epoch": parsed["epoch"],
        "val_loss": parsed["val_loss"],
        "size": stat.st_size,
        "mtime": stat.st_mtime,
        "valid": True,
        "invalid_reason": None,
        "read": False,
    }
    reason = check_t7(path)
    if reason is None and torchfile is not None:
        try:
            entry.update(read_contents(path, torchfile))
            entry["read"] = True
        except Exception as exc:  # torchfile raises whatever struct/numpy raise
            reason = f"torchfile could not load it: {type(exc).__name__}: {exc}"
    if reason is not None:
        entry["valid"] = False
        entry["invalid_reason"] = reason
    return entry


def list_checkpoints(directory: str, savefile: str | None = None) -> list[str]:
    """Paths of ``lm_*.t7`` files in ``directory`` (optionally of one savefile), by name."""
    paths = []
    for path in glob.glob(os.path.join(glob.escape(directory), "lm_*.t7")):
        if not os.path.isfile(path):
            continue
        if savefile is not None:
            parsed = parse_name(os.path.basename(path))
            if parsed is None or parsed["savefile"] != savefile:
                continue
        paths.append(path)
    return sorted(paths)


def _sortable(value: Any) -> float:
    if isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value)):
        return float(value)
    return -math.inf


def _newness(entry: dict[str, Any]) -> tuple:
    """Sort key of "newer": modification time, then iteration, then epoch, then name."""
    return (entry["mtime"], _sortable(entry.get("iteration")), _sortable(entry["epoch"]), entry["name"])


def latest_of(entries: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Newest valid checkpoint: modification time, then iteration, then epoch, then name."""
    valid = [e for e in entries if e["valid"]]
    if not valid:
        return None
    return max(valid, key=_newness)


def _loss(entry: dict[str, Any]) -> float:
    value = entry.get("file_val_loss")
    if not isinstance(value, (int, float)):
        value = entry["val_loss"]
    if not isinstance(value, (int, float)) or math.isnan(value):
        return math.inf
    return float(value)


def best_of(entries: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Valid checkpoint with the lowest validation loss (the newer one on a tie)."""
    candidates = [e for e in entries if e["valid"] and _loss(e) < math.inf]
    if not candidates:
        return None
    return min(candidates, key=lambda e: (_loss(e), -e["mtime"], -_sortable(e.get("iteration"))))


def retention(entries: list[dict[str, Any]], keep_newest: int) -> dict[str, list[dict[str, Any]]]:
    """Which checkpoints to keep and which to remove when keeping the best and the newest ``keep_newest``.

    Valid means what latest_of and best_of take (a complete file); invalid files (cut short by a
    crash) are never kept. ``keep_newest`` 0 (or less) keeps everything, as char-rnn does. The
    best is kept as well as the newest ones, so at most ``keep_newest + 1`` files stay.
    """
    if keep_newest <= 0:
        return {"keep": list(entries), "remove": []}
    newest = sorted((e for e in entries if e["valid"]), key=_newness, reverse=True)[:keep_newest]
    best = best_of(entries)
    kept = {e["path"] for e in newest} | ({best["path"]} if best else set())
    return {
        "keep": [e for e in entries if e["path"] in kept],
        "remove": [e for e in entries if e["path"] not in kept],
    }


def discover(directory: str, savefile: str | None = None, torchfile: Any = None) -> dict[str, Any]:
    """Everything checkpoint_info returns, for an existing directory."""
    entries = []
    for path in list_checkpoints(directory, savefile):
        try:
            entries.append(describe(path, torchfile))
        except FileNotFoundError:  # removed since it was listed
            continue
    return {
        "checkpoints": entries,
        "latest": latest_of(entries),
        "best": best_of(entries),
        "count": len(entries),
        "valid_count": sum(1 for e in entries if e["valid"]),
        "invalid": [e["path"] for e in entries if not e["valid"]],
    }
