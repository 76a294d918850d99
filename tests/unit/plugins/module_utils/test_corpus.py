"""corpus: the checks mirror char-rnn's CharSplitLMMinibatchLoader split arithmetic."""

from __future__ import annotations

import hashlib

import pytest
from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils.corpus import (
    CorpusError,
    check,
    maximum_size,
    minimum_size,
    splits,
)


@pytest.mark.parametrize(
    ("size", "batch", "seq", "expected"),
    [
        # tinyshakespeare (1115394 bytes) at char-rnn's defaults: 446 batches, 423 train, 23 val.
        (1_115_394, 50, 50, {"batches": 446, "train_batches": 423, "val_batches": 23, "test_batches": 0}),
        # The real fixture run: 30,000 characters at batch 10 x seq 20 -> 150 batches, 142 train, 8 val.
        (30_000, 10, 20, {"batches": 150, "train_batches": 142, "val_batches": 8, "test_batches": 0}),
        (4_999, 50, 50, {"batches": 1, "train_batches": 0, "val_batches": 1, "test_batches": 0}),
        (5_000, 50, 50, {"batches": 2, "train_batches": 1, "val_batches": 1, "test_batches": 0}),
    ],
)
def test_splits_match_char_rnn_loader(size, batch, seq, expected):
    assert splits(size, batch, seq) == expected


def test_splits_with_a_test_fraction():
    assert splits(100 * 10, 1, 10, train_frac=0.8, val_frac=0.1) == {
        "batches": 100,
        "train_batches": 80,
        "val_batches": 10,
        "test_batches": 10,
    }


@pytest.mark.parametrize(("batch", "seq", "expected"), [(50, 50, 5_000), (10, 20, 400), (1, 1, 2)])
def test_minimum_size(batch, seq, expected):
    assert minimum_size(batch, seq) == expected


def test_check_accepts_a_big_enough_text(tmp_path):
    corpus = tmp_path / "input.txt"
    text = ("First Citizen:\nBefore we proceed any further, hear me speak.\n" * 100).encode()
    corpus.write_bytes(text)
    facts = check(str(corpus), 10, 20)
    assert facts["size"] == len(text)
    assert facts["checksum"] == hashlib.sha1(text).hexdigest()
    assert facts["utf8"] is True
    assert facts["train_batches"] >= 1 and facts["val_batches"] >= 1


@pytest.mark.parametrize(
    ("content", "batch", "seq", "message"),
    [
        (None, 50, 50, "does not exist"),
        (b"", 50, 50, "is empty"),
        (b"\x7fELF\x02\x01\x01\x00\x00\x00" * 1000, 1, 1, "is not text"),
        (b"a" * 4_999, 50, 50, "needs at least 5000 bytes"),
        (b"a" * 100, 0, 50, "must be positive"),
    ],
)
def test_check_refuses_with_the_reason(tmp_path, content, batch, seq, message):
    corpus = tmp_path / "input.txt"
    if content is not None:
        corpus.write_bytes(content)
    with pytest.raises(CorpusError, match=message):
        check(str(corpus), batch, seq)


def test_check_refuses_a_directory(tmp_path):
    with pytest.raises(CorpusError, match="is a directory"):
        check(str(tmp_path), 1, 1)


def test_latin1_text_is_accepted_but_flagged(tmp_path):
    corpus = tmp_path / "input.txt"
    corpus.write_bytes("caf\xe9 au lait\n".encode("latin-1") * 100)
    facts = check(str(corpus), 2, 5)
    assert facts["utf8"] is False


def test_a_corpus_too_big_for_luajit_is_refused_from_its_size_alone(tmp_path):
    huge = tmp_path / "input.txt"
    with open(huge, "wb") as handle:  # sparse: 13 GB apparent, nothing written, never read
        handle.truncate(13_000_000_000)
    with pytest.raises(CorpusError) as raised:
        check(str(huge), 50, 50, lua_flavour="LUAJIT21")
    message = str(raised.value)
    assert "13000000000 bytes" in message and "torch7_lua_flavour: LUA51" in message
    assert "at most 12201610000 bytes" in message


@pytest.mark.parametrize(
    ("flavour", "limited"), [("LUAJIT21", True), ("LUAJIT20", True), ("LUA51", False), (None, False)]
)
def test_only_luajit_flavours_limit_the_size(flavour, limited):
    assert (maximum_size(50, 50, flavour) is not None) is limited
    if limited:
        # linear in batch x seq: the loader's heap grows with the number of batches
        assert maximum_size(10, 20, flavour) * 2500 == maximum_size(50, 50, flavour) * 200
