"""The network flow table of docs/azure.md ("Network flows") against the routes the templates
give (bicep/flows.py): every path has its documented route in both modes, nothing private is
reachable from the internet beyond the allowed IP, and planted breaks in copies of the
templates (a DNS zone link removed, a firewall opened to all, a subnet without its NAT
gateway, an endpoint in no zone) are caught."""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from bicep import flows
from workspace.settings import REPO_ROOT

BICEP = REPO_ROOT / "bicep"


def broken(tmp_path, relative: str, old: str, new: str):
    """A copy of bicep/ with `old` replaced by `new` in `relative`."""
    root = tmp_path / "bicep"
    shutil.copytree(BICEP, root, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    text = (root / relative).read_text()
    assert old in text, f"{old!r} is not in {relative}"
    (root / relative).write_text(text.replace(old, new, 1))
    return root


def test_the_table_covers_every_path_of_the_product():
    paths = {(f.source, f.target) for f in flows.documented_flows()}
    assert paths == {
        ("operator", "staging blob"), ("factory", "staging blob"), ("factory", "vault"),
        ("factory", "batch account"), ("pool", "staging blob"), ("pool", "datastore blob"),
        ("pool", "datastore queue"), ("pool", "internet"), ("aml compute", "datastore blob"),
        ("aml compute", "registry"), ("aml compute", "vault"), ("aml compute", "workspace"),
        ("aml compute", "internet"),
        ("operator", "datastore blob"), ("operator", "datastore queue")}


def test_every_documented_route_is_the_one_the_templates_give_in_both_modes():
    assert flows.check() == []


def test_private_mode_keeps_the_datastore_vault_and_registry_to_the_allowed_ip():
    network = flows.Network(BICEP, True)
    assert network.exposure() == []
    for symbol in ("storage", "keyVault", "registry"):
        wall = network.firewall(symbol)
        assert not wall.open_to_all and wall.ip_rules == (flows.ALLOWED_IP,), symbol
    # The default mode is open, which is what private mode exists to change.
    assert flows.Network(BICEP, False).firewall("storage").open_to_all


def test_compute_runs_in_the_vnet_only_in_private_mode():
    private, default = flows.Network(BICEP, True), flows.Network(BICEP, False)
    assert private.source_subnet("pool") == "network.outputs.batchSubnetId"
    assert private.source_subnet("aml compute") == "network.outputs.amlComputeSubnetId"
    assert default.source_subnet("pool") == default.source_subnet("aml compute") == ""
    assert private.staging == "stagingStorage" and default.staging == "storage"


def test_a_removed_dns_zone_link_leaves_the_private_paths_without_a_route(tmp_path):
    root = broken(tmp_path, "modules/network.bicep",
                  "resource privateDnsZoneLinks 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2020-06-01'",
                  "resource privateDnsZoneLinksRemoved 'Microsoft.Network/privateDnsZones@2020-06-01'")
    problems = flows.check(root)
    assert "Batch node → datastore blob (private mode): no route in the templates" in problems
    assert "Batch node → datastore queue (private mode): no route in the templates" in problems
    assert "Azure ML cluster → registry (private mode): no route in the templates" in problems


def test_a_link_for_the_blob_zone_only_leaves_the_queue_without_a_route(tmp_path):
    root = broken(tmp_path, "modules/network.bicep", "= [for (zone, i) in privateDnsZoneNames: {\n  parent: privateDnsZones[i]",
                  "= [for (zone, i) in blobZoneOnly: {\n  parent: privateDnsZones[i]")
    text = (root / "modules/network.bicep").read_text()
    (root / "modules/network.bicep").write_text(text.replace(
        "resource natIp", "var blobZoneOnly = [\n  'privatelink.blob.${environment().suffixes.storage}'\n]\n\nresource natIp", 1))
    problems = flows.check(root)
    assert "Batch node → datastore queue (private mode): no route in the templates" in problems
    assert not any(p.startswith("Batch node → datastore blob") for p in problems)


def test_a_storage_firewall_opened_to_all_is_caught(tmp_path):
    root = broken(tmp_path, "modules/storage.bicep", "defaultAction: privateNetworking ? 'Deny' : 'Allow'",
                  "defaultAction: 'Allow'")
    problems = flows.check(root)
    assert "private mode: storage: the firewall allows all networks" in problems
    assert any("operator → datastore" in p and "'public endpoint'" in p for p in problems)


def test_an_ip_rule_for_everyone_on_the_vault_is_caught(tmp_path):
    root = broken(tmp_path, "modules/keyvault.bicep", "          value: allowedIpAddress\n",
                  "          value: allowedIpAddress\n        }\n        {\n          value: '0.0.0.0/0'\n")
    assert "private mode: keyVault: IP rule(s) beyond the allowed IP: 0.0.0.0/0" in flows.check(root)


def without_nat_gateway(tmp_path, subnet: str):
    """A copy of bicep/ whose subnet `subnet` has no NAT gateway."""
    text = (BICEP / "modules/network.bicep").read_text()
    start = text.index(f"name: '{subnet}'")
    nat_block = "          natGateway: {\n            id: natGateway.id\n          }\n"
    nat = text.index(nat_block, start)
    return broken(tmp_path, "modules/network.bicep", text[start:nat + len(nat_block)], text[start:nat])


def test_a_batch_subnet_without_its_nat_gateway_cannot_reach_the_package_index(tmp_path):
    problems = flows.check(without_nat_gateway(tmp_path, "snet-batch"))
    assert "Batch node → package index (private mode): no route in the templates" in problems
    assert "Batch node → staging (download) (private mode): no route in the templates" in problems


def test_an_endpoint_whose_zone_group_names_another_zone_has_no_route(tmp_path):
    root = broken(tmp_path, "modules/private-endpoints.bicep", "    zoneIds: [\n      queueDnsZoneId\n    ]",
                  "    zoneIds: [\n      blobDnsZoneId\n    ]")
    assert "Batch node → datastore queue (private mode): no route in the templates" in flows.check(root)


def test_the_command_prints_the_derived_table():
    result = subprocess.run([sys.executable, "-m", "bicep.flows"], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "| Batch node → datastore queue | public endpoint | private endpoint |" in result.stdout
    assert "NO ROUTE" not in result.stdout


def test_a_template_that_does_not_parse_is_a_flow_error_naming_the_file(tmp_path):
    root = broken(tmp_path, "modules/network.bicep", "resource natIp ", "resource natIp = = ")
    with pytest.raises(flows.FlowError, match=r"modules/network\.bicep: does not parse as Bicep"):
        flows.Network(root, True)


def test_an_aml_subnet_without_its_nat_gateway_leaves_the_cluster_without_azure_mls_services(tmp_path):
    # Compute without public IPs reaches AzureMachineLearning, BatchNodeManagement, Entra ID and
    # Resource Manager outbound (docs/azure.md, "Sources": how-to-secure-training-vnet).
    problems = flows.check(without_nat_gateway(tmp_path, "snet-aml-compute"))
    assert "Azure ML cluster → Azure ML services (private mode): no route in the templates" in problems


def test_the_command_has_help_with_an_example_and_refuses_unknown_arguments():
    run = [sys.executable, "-m", "bicep.flows"]
    shown = subprocess.run(run + ["--help"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "usage: python -m bicep.flows" in shown.stdout
    assert "example:" in shown.stdout and "| path |" not in shown.stdout
    wrong = subprocess.run(run + ["--private"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 2 and "unrecognized arguments: --private" in wrong.stderr
