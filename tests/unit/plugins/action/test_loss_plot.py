"""The loss_plot action on the real char-rnn logs: a real PNG of the asked size with the expected curves,
idempotence, check mode, and a controller without matplotlib."""

from __future__ import annotations

import os
import struct
import sys
import zlib
from pathlib import Path
from typing import Any
from unittest.mock import MagicMock

import pytest
from ansible.errors import AnsibleActionFail
from ansible_collections.rnn_bootstrap.char_rnn.plugins.action import loss_plot
from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils.char_rnn_log import loss_history, parser_for_text

# A validation curve across the axes covers hundreds of pixels of its exact colour; a legend sample about 50.
CURVE_PIXELS = 150


@pytest.fixture
def matplotlib() -> Any:
    """matplotlib, or a skip on a developer's machine without it (scripts/test.sh requires it)."""
    try:
        import matplotlib as mpl
    except ImportError:
        if os.environ.get("CHARRNN_REQUIRE_TOOLS") == "1":
            pytest.fail("matplotlib is not installed (requirements-test.txt pins it)", pytrace=False)
        pytest.skip("matplotlib is not installed")
    return mpl


@pytest.fixture(scope="module")
def histories(real: Path) -> dict[str, dict[str, Any]]:
    return {name: loss_history(parser_for_text((real / f"train-{name}.log").read_text())) for name in ("lstm", "gru")}


def run_action(args: dict[str, Any], check_mode: bool = False) -> dict[str, Any]:
    """Run the action as the task executor would, without a play (it needs no connection)."""
    task = MagicMock(args=args, check_mode=check_mode, async_val=0, action="rnn_bootstrap.char_rnn.loss_plot")
    connection = MagicMock()
    connection._shell.tmpdir = None
    action = loss_plot.ActionModule(task, connection, MagicMock(), None, None)
    action._load_name = "rnn_bootstrap.char_rnn.loss_plot"
    return action.run(task_vars={})


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from the IHDR chunk, read without any image library."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def pixels_of(path: Path, color: str) -> int:
    """Pixels of exactly ``color`` (#rrggbb) in the image."""
    from PIL import Image  # comes with matplotlib

    with Image.open(path) as image:
        image.load()
        rgb = image.convert("RGB")
    wanted = tuple(int(color[i : i + 2], 16) for i in (1, 3, 5))
    return sum(count for count, value in rgb.getcolors(maxcolors=1 << 24) if value == wanted)


def test_history_of_the_real_logs(histories: dict[str, dict[str, Any]]) -> None:
    # the iterations of the checkpoints are those tests/fixtures/char-rnn/README.md gives
    assert [p[0] for p in histories["lstm"]["val"]] == [50, 100, 150, 200, 250, 284]
    assert [p[0] for p in histories["gru"]["val"]] == [60, 120, 142]


def test_overlay_of_two_runs(matplotlib: Any, histories: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    dest = tmp_path / "plots" / "overlay.png"  # the folder is created
    runs = [{"name": "h1/lstm", "history": histories["lstm"]}, {"name": "h2/gru", "history": histories["gru"]}]
    result = run_action({"runs": runs, "dest": str(dest), "title": "two runs", "width": 645, "height": 433})
    assert (result["changed"], result["plotted"], result["curves"]) == (True, True, 4), result
    assert png_size(dest) == (645, 433)
    from PIL import Image

    with Image.open(dest) as image:
        assert (image.format, image.size) == ("PNG", (645, 433))
        image.verify()  # reads every chunk and checks its CRC: a whole image, not only a header
    assert [c["name"] for c in result["colors"]] == ["h1/lstm", "h2/gru"]
    colors = [c[kind] for c in result["colors"] for kind in ("train", "val")]
    assert len(set(colors)) == 4
    for color in colors:
        assert pixels_of(dest, color) > CURVE_PIXELS, color
    # and a colour no curve has is not there: the count above can fail
    assert pixels_of(dest, loss_plot.colors_of(2)[1]) == 0


def test_idempotent_and_redrawn_when_the_runs_change(
    matplotlib: Any, histories: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    dest = tmp_path / "run.png"
    args = {"runs": [{"name": "lstm", "history": histories["lstm"]}], "dest": str(dest)}
    first = run_action(args)
    assert (first["changed"], first["curves"]) == (True, 2)
    assert png_size(dest) == (800, 500)
    before = (dest.read_bytes(), dest.stat().st_mtime_ns)
    second = run_action(args)
    assert (second["changed"], second["plotted"], second["curves"]) == (False, True, 2), second
    assert (dest.read_bytes(), dest.stat().st_mtime_ns) == before
    # one more checkpoint: drawn again
    more = {**histories["lstm"], "val": [*histories["lstm"]["val"], [300, 3.1]]}
    third = run_action({**args, "runs": [{"name": "lstm", "history": more}]})
    assert third["changed"] is True
    assert dest.read_bytes() != before[0]
    # the same inputs give the same bytes (no timestamp, no version in the file)
    other = tmp_path / "again.png"
    run_action({**args, "runs": [{"name": "lstm", "history": more}], "dest": str(other)})
    assert other.read_bytes() == dest.read_bytes()


def test_damaged_png_is_redrawn(matplotlib: Any, histories: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    dest = tmp_path / "run.png"
    args = {"runs": [{"name": "gru", "history": histories["gru"]}], "dest": str(dest), "width": 300, "height": 200}
    run_action(args)
    whole = dest.read_bytes()
    dest.write_bytes(whole[: len(whole) // 2])  # its digest chunk is still there, but the image is cut short
    assert run_action(args)["changed"] is True
    assert dest.read_bytes() == whole


def test_check_mode(matplotlib: Any, histories: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    dest = tmp_path / "run.png"
    args = {"runs": [{"name": "gru", "history": histories["gru"]}], "dest": str(dest)}
    result = run_action(args, check_mode=True)
    assert (result["changed"], result["plotted"]) == (True, False)
    assert not dest.exists()
    run_action(args)
    assert run_action(args, check_mode=True)["changed"] is False


def test_whole_train_progress_result_and_empty_run(
    matplotlib: Any, histories: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    progress = {"iteration": 284, "history": histories["lstm"]}  # as registered from train_progress
    empty = {"train": [], "val": [], "train_points": 0, "val_points": 0, "segments": 0}
    dest = tmp_path / "run.png"
    runs = [{"name": "a", "history": progress}, {"name": "not started", "history": empty}]
    result = run_action({"runs": runs, "dest": str(dest)})
    assert (result["plotted"], result["curves"]) == (True, 2)
    blank = run_action({"runs": [{"name": "x", "history": empty}], "dest": str(tmp_path / "blank.png")})
    assert (blank["plotted"], blank["curves"]) == (True, 0)
    assert png_size(tmp_path / "blank.png") == (800, 500)


def test_without_matplotlib(monkeypatch: pytest.MonkeyPatch, histories: dict[str, dict[str, Any]], tmp_path) -> None:
    for name in ("matplotlib", "matplotlib.backends", "matplotlib.backends.backend_agg", "matplotlib.figure"):
        monkeypatch.setitem(sys.modules, name, None)  # import raises ImportError
    dest = tmp_path / "run.png"
    result = run_action({"runs": [{"name": "gru", "history": histories["gru"]}], "dest": str(dest)})
    assert result.get("failed") is not True
    assert (result["changed"], result["plotted"], result["curves"]) == (False, False, 2)
    assert "matplotlib is not installed" in result["msg"]
    assert "pip install 'matplotlib==" in result["msg"]
    assert not dest.exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ({"width": 50}, "width must be between 100 and 10000 pixels, not 50"),
        ({"height": 20000}, "height must be between 100 and 10000 pixels, not 20000"),
        ({"runs": [{"name": "x", "history": {"train": [[1]]}}]}, "runs[0].history.train[0] must be [iteration, loss]"),
        ({"runs": [{"name": "x", "history": {"train": "3.1"}}]}, "runs[0].history.train must be a list"),
        ({"runs": [{"name": "x", "history": {"loss": []}}]}, "runs[0].history has loss: expected train and val"),
        ({"runs": [{"name": "x"}]}, "missing required arguments: history"),
    ],
)
def test_bad_arguments(args: dict[str, Any], needle: str, tmp_path: Path) -> None:
    base = {"runs": [{"name": "x", "history": {"train": [[1, 2.0]]}}], "dest": str(tmp_path / "x.png")}
    with pytest.raises(AnsibleActionFail) as caught:
        run_action({**base, **args})
    assert needle in str(caught.value)


def test_dest_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(AnsibleActionFail, match="is a directory"):
        run_action({"runs": [], "dest": str(tmp_path)})


def test_png_text_rejects_what_is_not_a_whole_png(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    assert loss_plot.png_text(str(path)) is None  # missing
    path.write_bytes(b"GIF89a")
    assert loss_plot.png_text(str(path)) is None
    chunk = b"tEXt" + b"k\0v"
    text = struct.pack(">I", 3) + chunk + struct.pack(">I", zlib.crc32(chunk))
    end = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + text + end)
    assert loss_plot.png_text(str(path)) == {"k": "v"}
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + text)  # no IEND: cut short
    assert loss_plot.png_text(str(path)) is None
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + text[:-1] + bytes([text[-1] ^ 1]) + end)  # bad CRC
    assert loss_plot.png_text(str(path)) is None
