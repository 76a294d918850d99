# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Checks of a char-rnn training corpus (input.txt), in the terms char-rnn's loader uses.

char-rnn's CharSplitLMMinibatchLoader works on bytes: it cuts the data to a multiple of
batch_size * seq_length, makes nbatches = floor(bytes / (batch_size * seq_length)), gives
floor(nbatches * train_frac) to train and (with no test split) the rest to validation. A split
with no batch makes train.lua fail mid-run, so the check refuses such a corpus up front.

LuaJIT (as torch/distro builds it: 2.1 without GC64) keeps every Lua object below 2 GB of address
space. The loader's tensors are malloc'd outside that heap, but it splits the data into one
tensor view per batch for x and y, and those userdata and table slots are Lua objects: measured
81-101 bytes of LuaJIT heap per batch with the real Torch7 and char-rnn (collectgarbage('count')
around CharSplitLMMinibatchLoader.create at batch x seq 1x1, 10x10 and 50x50). The loader may use
LOADER_HEAP_BUDGET of the heap (the rest is for the model, its clones and training), so a corpus
with more than LOADER_HEAP_BUDGET / LOADER_HEAP_PER_BATCH batches is refused on LuaJIT flavours.
"""

from __future__ import annotations

import codecs
import hashlib
import math
import os

CHUNK = 1 << 20
LUAJIT_FLAVOURS = ("LUAJIT21", "LUAJIT20")
LOADER_HEAP_PER_BATCH = 110  # bytes, measured 81-101 (module docstring), rounded up
LOADER_HEAP_BUDGET = 512 << 20  # a quarter of LuaJIT's 2 GB, half of the 1 GB it reliably gets
# Bytes that never occur in text: NUL and most C0 controls (tab, newlines, form feed, ESC kept).
BINARY_BYTES = frozenset(range(0, 9)) | frozenset(range(14, 27)) | frozenset(range(28, 32))


class CorpusError(Exception):
    """The corpus cannot be used; the message says why and what to do."""


def scan(path: str) -> dict:
    """Size, SHA-1, whether it looks like text, and whether it decodes as UTF-8."""
    sha1 = hashlib.sha1()  # the digest Ansible's stat and copy compare with
    size = binary = 0
    decoder_ok = True
    decoder = codecs.getincrementaldecoder("utf-8")()
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(CHUNK)
            if not chunk:
                break
            size += len(chunk)
            sha1.update(chunk)
            binary += sum(1 for byte in chunk[:65536] if byte in BINARY_BYTES)
            if decoder_ok:
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError:
                    decoder_ok = False
    if decoder_ok:
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            decoder_ok = False
    return {"size": size, "checksum": sha1.hexdigest(), "binary_bytes": binary, "utf8": decoder_ok}


def splits(size: int, batch_size: int, seq_length: int, train_frac: float = 0.95, val_frac: float = 0.05) -> dict:
    """The batch counts char-rnn's loader will make of SIZE bytes."""
    if batch_size < 1 or seq_length < 1:
        raise CorpusError(f"batch_size ({batch_size}) and seq_length ({seq_length}) must be positive")
    nbatches = size // (batch_size * seq_length)
    ntrain = math.floor(nbatches * train_frac)
    test_frac = max(0.0, 1 - (train_frac + val_frac))
    nval = nbatches - ntrain if test_frac == 0 else math.floor(nbatches * val_frac)
    return {"batches": nbatches, "train_batches": ntrain, "val_batches": nval, "test_batches": nbatches - ntrain - nval}


def minimum_size(batch_size: int, seq_length: int, train_frac: float = 0.95, val_frac: float = 0.05) -> int:
    """Smallest corpus (bytes) giving at least one train and one validation batch."""
    step = batch_size * seq_length
    for nbatches in range(2, 10_000):
        counts = splits(nbatches * step, batch_size, seq_length, train_frac, val_frac)
        if counts["train_batches"] >= 1 and counts["val_batches"] >= 1:
            return nbatches * step
    raise CorpusError(f"train_frac {train_frac} and val_frac {val_frac} never give both splits a batch")


def maximum_size(batch_size: int, seq_length: int, lua_flavour: str | None) -> int | None:
    """Largest corpus (bytes) char-rnn's loader handles under LUA_FLAVOUR; None = no limit known."""
    if lua_flavour not in LUAJIT_FLAVOURS:
        return None
    return LOADER_HEAP_BUDGET // LOADER_HEAP_PER_BATCH * batch_size * seq_length


def check(
    path: str,
    batch_size: int,
    seq_length: int,
    train_frac: float = 0.95,
    val_frac: float = 0.05,
    lua_flavour: str | None = None,
) -> dict:
    """Everything about PATH as a corpus; raises CorpusError with the reason when it is unusable.

    The size limit is checked before the file is read, so a huge corpus fails at once."""
    limit = maximum_size(batch_size, seq_length, lua_flavour) if batch_size > 0 and seq_length > 0 else None
    try:
        size = os.stat(path).st_size
    except FileNotFoundError as exc:
        raise CorpusError(f"corpus {path} does not exist") from exc
    except OSError as exc:
        raise CorpusError(f"corpus {path} cannot be read: {exc}") from exc
    if limit is not None and size > limit:
        raise CorpusError(
            f"corpus {path} has {size} bytes, more than char-rnn's loader can hold in LuaJIT's memory "
            f"with batch_size {batch_size} x seq_length {seq_length} (at most {limit} bytes, "
            f"{limit // (1 << 20)} MiB, with lua_flavour {lua_flavour}). Build Torch with "
            "torch7_lua_flavour: LUA51 (no such limit), or raise batch_size / seq_length."
        )
    try:
        facts = scan(path)
    except FileNotFoundError as exc:
        raise CorpusError(f"corpus {path} does not exist") from exc
    except IsADirectoryError as exc:
        raise CorpusError(f"corpus {path} is a directory; give the path of a text file") from exc
    except OSError as exc:
        raise CorpusError(f"corpus {path} cannot be read: {exc}") from exc
    if facts["size"] == 0:
        raise CorpusError(f"corpus {path} is empty")
    if facts["binary_bytes"]:
        raise CorpusError(
            f"corpus {path} is not text: {facts['binary_bytes']} control or NUL bytes in its first 64 KiB"
        )
    facts.update(splits(facts["size"], batch_size, seq_length, train_frac, val_frac))
    needed = minimum_size(batch_size, seq_length, train_frac, val_frac)
    facts["minimum_size"] = needed
    facts["maximum_size"] = limit
    if facts["train_batches"] < 1 or facts["val_batches"] < 1:
        raise CorpusError(
            f"corpus {path} has {facts['size']} bytes; batch_size {batch_size} x seq_length {seq_length} "
            f"needs at least {needed} bytes for one training and one validation batch. "
            "Use a larger corpus or a smaller batch_size / seq_length."
        )
    return facts
