"""The network route of each data path, derived from the Bicep templates, in either mode.

    python -m bicep.flows            # the table of docs/azure.md, "Network flows", as derived

Reads bicep/main.bicep and its modules with pycep and evaluates, for privateNetworking false
and true, what decides a route: the firewalls (default action, IP rules, trusted-service
bypass) of the storage accounts, Key Vault and registry; the private endpoints (resource,
group id, subnet), their DNS zone groups and the zones' links to the VNet; the subnets the
pool and the Azure ML compute run in and their NAT gateway. A route is one of:

- ``private endpoint``: the source is in the VNet, the target resource has a private endpoint
  for that service in a subnet of the VNet, its zone group names the service's private DNS
  zone, and that zone is linked to the VNet (else the public name does not resolve to it);
- ``NAT gateway``: the source's subnet goes out through a NAT gateway to a public endpoint
  that allows all networks (or the internet);
- ``public endpoint``: the source is outside the VNet and the firewall allows all networks;
- ``allowed IP``: the operator's address is the firewall's one IP rule;
- ``trusted service``: Data Factory through Key Vault's trusted-services exception;
- none: no route.

Only what the templates say is evaluated: parameters, variables, conditionals, `empty`,
`&&`, `!`; anything else (outputs of other modules, ids) stays a reference string.
"""
from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent
DOC = ROOT.parent / "docs" / "azure.md"
TABLE_MARKER = "<!-- network-flows:"
ALLOWED_IP = "ALLOWED_IP"  # stands for the allowedIpAddress parameter
# Private DNS zone of each private-link group id (Microsoft's "Azure Private Endpoint private
# DNS zone values"); the templates write the cloud's suffix with environment().
ZONES = {
    "blob": r"^privatelink\.blob\.",
    "queue": r"^privatelink\.queue\.",
    "vault": r"^privatelink\.vaultcore",
    "registry": r"^privatelink\$\{environment\(\)\.suffixes\.acrLoginServer\}$",
    "amlworkspace": r"^privatelink\.api\.azureml\.ms$",
}
# Target of the table -> (module symbol in main.bicep, private-link group id / service).
TARGETS = {
    "staging blob": ("@staging", "blob"),
    "datastore blob": ("storage", "blob"),
    "datastore queue": ("storage", "queue"),
    "vault": ("keyVault", "vault"),
    "registry": ("registry", "registry"),
    "workspace": ("workspace", "amlworkspace"),
    "batch account": ("batch", "batchAccount"),
    "internet": (None, None),
}
# The resource (symbol in its module) whose network settings each module's target has.
FIREWALLED = {"modules/storage.bicep": "storage", "modules/keyvault.bicep": "vault",
              "modules/registry.bicep": "registry", "modules/ml-workspace.bicep": "workspace",
              "modules/batch.bicep": "batchAccount"}
SOURCES = ("operator", "factory", "pool", "aml compute")


class FlowError(Exception):
    """The templates cannot be read as this module expects."""


def ref(expr) -> str:
    """A reference expression as text: 'network.outputs.batchSubnetId', 'privateDnsZones[0].id'
    (any other expression as its JSON)."""
    if isinstance(expr, str):
        return expr
    if isinstance(expr, dict) and "operator" in expr:
        op = expr["operator"]
        a, b = op["operands"].get("operand_1"), op["operands"].get("operand_2")
        if op["type"] == "property_accessor":
            return f"{ref(a)}.{ref(b)}"
        if op["type"] == "index_accessor":
            return f"{ref(a)}[{ref(b)}]"
    return json.dumps(expr, sort_keys=True)


class Template:
    def __init__(self, root: Path, relative: str):
        from bicep.schema_check import _parse

        self.relative = relative
        try:
            self.parsed = _parse((root / relative).read_text())
        except OSError as exc:
            raise FlowError(f"{root / relative}: {exc.strerror}") from exc
        except Exception as exc:  # lark's parse errors carry the line and column
            raise FlowError(f"{root / relative}: does not parse as Bicep: {str(exc).splitlines()[0]}") from exc
        self.variables = {k: v["value"] for k, v in self.parsed.get("variables", {}).items()}

    def evaluate(self, expr, env: dict):
        from pycep.models import BicepElement

        if isinstance(expr, BicepElement):
            if expr in env:
                return env[expr]
            if expr in self.variables:
                return self.evaluate(self.variables[expr], env)
            return str(expr)
        if isinstance(expr, list):
            return [self.evaluate(item, env) for item in expr]
        if isinstance(expr, dict) and set(expr) == {"operator"}:
            op, operands = expr["operator"]["type"], expr["operator"]["operands"]
            if op == "conditional":
                branch = "true_value" if self.evaluate(operands["condition"], env) is True else "false_value"
                return self.evaluate(operands[branch], env)
            if op == "and":
                return self.evaluate(operands["operand_1"], env) is True and \
                    self.evaluate(operands["operand_2"], env) is True
            if op == "not":
                return self.evaluate(operands["bool_value"], env) is not True
            return ref(expr)
        if isinstance(expr, dict) and set(expr) == {"function"}:
            function = expr["function"]
            if function["type"] == "empty":
                return self.evaluate(function["parameters"]["item_to_test"], env) in ("", [], {}, None)
            return f"{function['type']}(...)"
        if isinstance(expr, dict):
            return {k: self.evaluate(v, env) for k, v in expr.items()}
        return expr

    def resource(self, symbol: str) -> dict:
        statement = self.parsed.get("resources", {}).get(symbol)
        if statement is None:
            return {}
        body = statement["config"]
        while isinstance(body, dict) and "config" in body and ("condition" in body or "loop_type" in body):
            body = body["config"]
        return body


@dataclass(frozen=True)
class Firewall:
    open_to_all: bool
    ip_rules: tuple[str, ...] = ()
    trusted_services: bool = False
    network_rules: int = 0


@dataclass(frozen=True)
class Endpoint:
    resource: str  # module symbol of the target ('storage', 'keyVault', ...)
    group: str
    in_vnet: bool
    zones: tuple[str, ...]  # zone names its zone group names


class Network:
    """What the templates deploy in one mode."""

    def __init__(self, root: Path, private: bool):
        self.root, self.private = root, private
        self.main = Template(root, "main.bicep")
        self.env = {"privateNetworking": private, "allowedIpAddress": ALLOWED_IP}
        self.modules = {symbol: statement for symbol, statement in self.main.parsed["modules"].items()
                        if self._deployed(statement)}
        self.templates: dict[str, Template] = {}
        self.staging = self._staging_module()
        self.subnets, self.linked_zones, self.zone_names = self._network()
        self.endpoints = self._endpoints()

    # ------------------------------------------------------------------ reading

    def _deployed(self, statement: dict) -> bool:
        condition = statement["config"].get("condition")
        return condition is None or self.main.evaluate(condition, self.env) is True

    def template(self, symbol: str) -> Template:
        path = self.modules[symbol]["detail"]["path"]
        if path not in self.templates:
            self.templates[path] = Template(self.root, path)
        return self.templates[path]

    def params(self, symbol: str) -> dict:
        body = self.modules[symbol]["config"]
        body = body.get("config", body) if "condition" in body else body
        template = self.template(symbol)
        values = {name: self.main.evaluate(value, self.env) for name, value in body["params"].items()}
        for name, param in template.parsed.get("parameters", {}).items():
            values.setdefault(name, param.get("default"))
        return values

    def _staging_module(self) -> str:
        """The module of the account the factory stages into (the key in Key Vault is its)."""
        account = ref(self.main.evaluate(self.modules["storageKeySecret"]["config"]["params"]
                                         ["storageAccountName"], self.env))
        return account.split(".")[0]

    def _network(self) -> tuple[dict[str, bool], set[str], list[str]]:
        """Subnet outputs of network.bicep -> has a NAT gateway; zones linked to the VNet."""
        if "network" not in self.modules:
            return {}, set(), []
        template = self.template("network")
        env = self.params("network")
        vnet = template.evaluate(template.resource("vnet"), env)
        subnets = vnet["properties"]["subnets"]
        outputs = {}
        for name, output in template.parsed.get("outputs", {}).items():
            match = re.fullmatch(r"vnet\.properties\.subnets\[(\d+)\]\.id", ref(output["value"]))
            if match:
                outputs[f"network.outputs.{name}"] = "natGateway" in subnets[int(match.group(1))]["properties"]
        zone_names = template.evaluate(template.variables.get("privateDnsZoneNames", []), env)
        linked = set()
        for symbol, statement in template.parsed.get("resources", {}).items():
            if statement["type"] != "Microsoft.Network/privateDnsZones/virtualNetworkLinks":
                continue
            loop = statement["config"].get("loop_type") or {}
            body = template.resource(symbol)
            if ref(body.get("properties", {}).get("virtualNetwork", {}).get("id")) != "vnet.id":
                continue
            array = loop.get("detail", {}).get("array_name")
            if ref(body.get("parent")).startswith("privateDnsZones[") and array in template.variables:
                linked |= set(template.evaluate(template.variables[array], env))
        return outputs, linked, zone_names

    def _zones(self, reference: str) -> list[str]:
        """Zone names behind 'network.outputs.<name>': one zone id, or an array of them."""
        match = re.fullmatch(r"network\.outputs\.(\w+)", reference)
        output = self.template("network").parsed["outputs"].get(match.group(1), {}) if match else {}
        values = output.get("value")
        names = []
        for value in values if isinstance(values, list) else [values]:
            index = re.fullmatch(r"privateDnsZones\[(\d+)\]\.id", ref(value))
            if index:
                names.append(self.zone_names[int(index.group(1))])
        return names

    def _endpoints(self) -> list[Endpoint]:
        if "privateEndpoints" not in self.modules:
            return []
        template = self.template("privateEndpoints")
        params = self.params("privateEndpoints")
        in_vnet = ref(params.get("subnetId")) in self.subnets  # a subnet of the VNet the zones link
        found = []
        for endpoint in template.variables.get("endpoints", []):
            resource = ref(params.get(str(endpoint["resourceId"]))).split(".")[0]
            ids = endpoint.get("zoneIds", [])
            references = [ref(params.get(str(z))) for z in ids] if isinstance(ids, list) else [ref(params.get(str(ids)))]
            zones = [zone for reference in references for zone in self._zones(reference)]
            found.append(Endpoint(resource, endpoint["groupId"], in_vnet, tuple(zones)))
        return found

    def firewall(self, symbol: str) -> Firewall:
        template = self.template(symbol)
        resource = FIREWALLED.get(self.modules[symbol]["detail"]["path"])
        body = template.evaluate(template.resource(resource), self.params(symbol)) if resource else {}
        properties = body.get("properties", {})
        if properties.get("publicNetworkAccess") == "Disabled":
            return Firewall(False)
        acls = properties.get("networkAcls") or properties.get("networkRuleSet")
        if not isinstance(acls, dict) or acls.get("defaultAction", "Allow") == "Allow":
            return Firewall(True)
        ips = tuple(rule.get("value", "") for rule in acls.get("ipRules") or [])
        bypass = acls.get("bypass") or properties.get("networkRuleBypassOptions") or ""
        return Firewall(False, ips, "AzureServices" in str(bypass), len(acls.get("virtualNetworkRules") or []))

    # ------------------------------------------------------------------ routes

    def source_subnet(self, source: str) -> str:
        """The subnet output a compute source runs in ('' outside the VNet)."""
        if source == "pool":
            return ref(self.params("batch").get("subnetId") or "")
        if source == "aml compute":
            return ref(self.main.evaluate(self.main.parsed["outputs"]["amlComputeSubnetId"]["value"], self.env))
        return ""

    def private_endpoint(self, symbol: str, group: str) -> bool:
        for endpoint in self.endpoints:
            if endpoint.resource == symbol and endpoint.group == group and endpoint.in_vnet:
                if any(re.search(ZONES[group], zone) and zone in self.linked_zones for zone in endpoint.zones):
                    return True
        return False

    def route(self, source: str, target: str) -> str | None:
        symbol, group = TARGETS[target]
        if symbol == "@staging":
            symbol = self.staging
        subnet = self.source_subnet(source)
        in_vnet = subnet in self.subnets
        if symbol is None:  # the internet (package index)
            if in_vnet:
                return "NAT gateway" if self.subnets[subnet] else None
            return "public endpoint"
        if in_vnet and self.private_endpoint(symbol, group):
            return "private endpoint"
        wall = self.firewall(symbol)
        if wall.open_to_all:
            if in_vnet:
                return "NAT gateway" if self.subnets[subnet] else None
            return "public endpoint"
        if source == "operator" and wall.ip_rules == (ALLOWED_IP,):
            return "allowed IP"
        if source == "factory" and group == "vault" and wall.trusted_services:
            return "trusted service"  # Key Vault's trusted services include Data Factory
        return None

    def exposure(self) -> list[str]:
        """Resources that private mode must keep from the internet, reachable beyond ALLOWED_IP."""
        problems = []
        for symbol in ("storage", "keyVault", "registry"):
            wall = self.firewall(symbol)
            if wall.open_to_all:
                problems.append(f"{symbol}: the firewall allows all networks")
            extra = [ip for ip in wall.ip_rules if ip != ALLOWED_IP]
            if extra:
                problems.append(f"{symbol}: IP rule(s) beyond the allowed IP: {', '.join(extra)}")
            if wall.network_rules:
                problems.append(f"{symbol}: virtual network rules open it to other subnets")
        return problems


# ------------------------------------------------------------------ the documented table

@dataclass(frozen=True)
class Flow:
    path: str
    source: str
    target: str
    default: str
    private: str


def documented_flows(doc: Path = DOC) -> list[Flow]:
    """The rows of the table after the network-flows marker in docs/azure.md."""
    lines = doc.read_text().splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.startswith(TABLE_MARKER))
    except StopIteration:
        raise FlowError(f"{doc}: no '{TABLE_MARKER}' table") from None
    flows = []
    for line in lines[start + 3:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        flows.append(Flow(*cells))
    return flows


def check(root: Path = ROOT, doc: Path = DOC) -> list[str]:
    """Every disagreement between the documented table and the templates, both modes, and
    every private-mode exposure beyond the allowed IP."""
    problems = []
    networks = {False: Network(root, False), True: Network(root, True)}
    for flow in documented_flows(doc):
        if flow.source not in SOURCES or flow.target not in TARGETS:
            problems.append(f"{flow.path}: unknown source or target ({flow.source} → {flow.target})")
            continue
        for private, expected in ((False, flow.default), (True, flow.private)):
            found = networks[private].route(flow.source, flow.target)
            mode = "private" if private else "default"
            if found is None:
                problems.append(f"{flow.path} ({mode} mode): no route in the templates")
            elif found != expected:
                problems.append(f"{flow.path} ({mode} mode): the templates give '{found}', the table '{expected}'")
    problems += [f"private mode: {p}" for p in networks[True].exposure()]
    return problems


def main(argv: list[str] | None = None) -> int:
    from bicep.schema_check import cli_parser

    parser = cli_parser(
        "python -m bicep.flows", __doc__,
        "example:\n  python -m bicep.flows     # the route of every data path in both modes\n\n"
               "The documented table (docs/azure.md, 'Network flows') is checked against it by\n"
               "tests/bicep/test_network_flows.py. exit codes: 0 printed, 2 templates or table unreadable")
    parser.parse_args(argv)
    try:
        networks = {False: Network(ROOT, False), True: Network(ROOT, True)}
        flows = documented_flows()
    except FlowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("| path | default mode | private mode |\n|---|---|---|")
    for flow in flows:
        routes = [networks[p].route(flow.source, flow.target) or "NO ROUTE" for p in (False, True)]
        print(f"| {flow.path} | {routes[0]} | {routes[1]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
