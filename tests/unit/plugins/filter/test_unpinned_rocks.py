"""The unpinned_rocks filter: which rocks of the luarocks role would install whatever the servers offer."""

from __future__ import annotations

from ansible_collections.rnn_bootstrap.char_rnn.plugins.filter.unpinned_rocks import FilterModule, unpinned_rocks


def test_bare_names_missing_versions_and_latest_are_unpinned():
    extra = [
        "lua-cjson",
        {"name": "penlight"},
        {"name": "moses", "version": ""},
        {"name": "luasocket", "version": "3.1.0-1", "state": "latest"},
        {"name": "dkjson", "version": "2.8-1"},  # pinned
        {"name": "dkjson", "version": "2.8"},  # pinned, any revision
        {"rockspec": "/srv/rocks/mine-1.0-1.rockspec"},  # a local rockspec
        {"name": "old", "state": "absent"},  # a removal downloads nothing
    ]
    assert unpinned_rocks(extra) == [
        "lua-cjson (luarocks_extra_rocks, no version)",
        "penlight (luarocks_extra_rocks, no version)",
        "moses (luarocks_extra_rocks, no version)",
        "luasocket (luarocks_extra_rocks, state latest)",
    ]


def test_luarocks_rocks_count_only_with_state_latest():
    assert unpinned_rocks([], ["luafilesystem", "lua-cjson"], "present") == []
    assert unpinned_rocks(None, ["lua-cjson"], "latest") == ["lua-cjson (luarocks_rocks_state latest)"]
    assert unpinned_rocks([42]) == ["42 (luarocks_extra_rocks, neither a name nor a dict)"]
    assert FilterModule().filters()["unpinned_rocks"] is unpinned_rocks
