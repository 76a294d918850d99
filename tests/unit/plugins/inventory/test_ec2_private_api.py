"""The private API of amazon.aws that plugins/inventory/ec2.py relies on, as galaxy.yml bounds it.

ec2.py subclasses amazon.aws's aws_ec2 inventory and calls methods that are not amazon.aws's public
interface. galaxy.yml allows the amazon.aws major version tested here; a version that changes
these signatures fails this test before it fails a user's inventory.
"""

from __future__ import annotations

import inspect
import json
import operator
import re
from pathlib import Path

import ansible_collections.amazon.aws as amazon_aws
import yaml
from ansible.module_utils.compat.version import LooseVersion
from ansible_collections.amazon.aws.plugins.inventory.aws_ec2 import InventoryModule as AwsEc2
from ansible_collections.amazon.aws.plugins.plugin_utils.inventory import AWSInventoryBase
from ansible_collections.rnn_bootstrap.char_rnn.plugins.inventory.ec2 import InventoryModule

REPO = Path(__file__).resolve().parents[4]


def params(function) -> list[str]:
    return list(inspect.signature(function).parameters)


def test_installed_amazon_aws_is_within_galaxy_yml_bounds() -> None:
    manifest = json.loads((Path(next(iter(amazon_aws.__path__))) / "MANIFEST.json").read_text())
    version = LooseVersion(manifest["collection_info"]["version"])
    bounds = yaml.safe_load((REPO / "galaxy.yml").read_text())["dependencies"]["amazon.aws"]
    checks = re.findall(r"(>=|<)\s*([\d.]+)", bounds)
    assert len(checks) == 2, f"expected a lower and an upper bound, got {bounds!r}"
    compare = {">=": operator.ge, "<": operator.lt}
    assert all(compare[op](version, LooseVersion(limit)) for op, limit in checks), (str(version), bounds)


def test_private_methods_have_the_signatures_ec2_py_calls() -> None:
    assert params(AwsEc2._query) == [
        "self",
        "regions",
        "include_filters",
        "exclude_filters",
        "strict_permissions",
        "use_ssm_inventory",
    ]
    assert params(AWSInventoryBase._boto3_regions) == ["self", "service"]
    assert params(AWSInventoryBase.parse)[:5] == ["self", "inventory", "loader", "path", "cache"]
    assert params(AWSInventoryBase.get_cached_result) == ["self", "path", "cache"]
    assert params(AWSInventoryBase.update_cached_result) == ["self", "path", "cache", "result"]
    assert params(AwsEc2.iter_entry)[:3] == ["self", "hosts", "hostnames"]
    assert isinstance(inspect.getattr_static(AwsEc2, "route53_enabled"), property)


def test_ec2_overrides_what_it_means_to() -> None:
    assert InventoryModule.__mro__[1] is AwsEc2
    assert "_boto3_regions" in vars(InventoryModule) and "route53_enabled" in vars(InventoryModule)
