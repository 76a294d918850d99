"""The ec2_fleet_tags filter: the ec2_fleet role writes (and filters by) the tags the inventory plugin reads."""

from __future__ import annotations

from ansible_collections.rnn_bootstrap.char_rnn.plugins.filter.ec2_fleet_tags import FilterModule, ec2_fleet_tags
from ansible_collections.rnn_bootstrap.char_rnn.plugins.plugin_utils.ec2_distros import DISTRO_TAG, FLEET_TAG


def test_tags_to_write():
    assert ec2_fleet_tags("lab", owner="me") == {
        "rnn_bootstrap:fleet": "lab",
        "rnn_bootstrap:owner": "me",
        "managed-by": "rnn_bootstrap.char_rnn",
    }
    assert ec2_fleet_tags("lab", owner="me", distro="debian-12")["rnn_bootstrap:distro"] == "debian-12"


def test_filters_select_by_the_given_tags_only():
    assert ec2_fleet_tags("lab", filters=True) == {"tag:rnn_bootstrap:fleet": "lab"}
    assert ec2_fleet_tags("lab", distro="rocky-9", filters=True) == {
        "tag:rnn_bootstrap:fleet": "lab",
        "tag:rnn_bootstrap:distro": "rocky-9",
    }


def test_the_keys_are_the_ones_the_inventory_plugin_reads():
    tags = ec2_fleet_tags("lab", owner="me", distro="ubuntu-24.04")
    assert tags[FLEET_TAG] == "lab" and tags[DISTRO_TAG] == "ubuntu-24.04"
    assert FilterModule().filters() == {"ec2_fleet_tags": ec2_fleet_tags}


def test_docs_parse():
    import yaml
    from ansible_collections.rnn_bootstrap.char_rnn.plugins.filter import ec2_fleet_tags as plugin

    doc = yaml.safe_load(plugin.DOCUMENTATION)
    assert set(doc["options"]) == {"_input", "owner", "distro", "filters"}
    assert yaml.safe_load(plugin.EXAMPLES) and yaml.safe_load(plugin.RETURN)["_value"]["type"] == "dict"
