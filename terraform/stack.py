"""What the Terraform stack deploys, read from its parsed files: the Azure resource kinds
per mode, the role assignments, the outputs, the pool settings and the ADF documents after
placeholder filling, in the terms bicep/ is compared in (tests/terraform/test_parity.py).
"""
from __future__ import annotations

import ast
import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bicep.flows import Firewall
from terraform.hcl import TERRAFORM_DIR, labelled, parse, resources, unquote

# The Azure resource kinds (ARM types) each Terraform resource type deploys. A type missing
# here is an error: add it with the kinds it creates, so the parity test sees it.
ARM_KINDS: dict[str, tuple[str, ...]] = {
    "azurerm_resource_group": ("Microsoft.Resources/resourceGroups",),
    "azurerm_user_assigned_identity": ("Microsoft.ManagedIdentity/userAssignedIdentities",),
    "azurerm_log_analytics_workspace": ("Microsoft.OperationalInsights/workspaces",),
    "azurerm_application_insights": ("Microsoft.Insights/components",),
    # blob_properties is the account's blob service (Bicep declares it apart).
    "azurerm_storage_account": ("Microsoft.Storage/storageAccounts", "Microsoft.Storage/storageAccounts/blobServices"),
    "azurerm_storage_container": ("Microsoft.Storage/storageAccounts/blobServices/containers",),
    "azurerm_key_vault": ("Microsoft.KeyVault/vaults",),
    "azurerm_container_registry": ("Microsoft.ContainerRegistry/registries",),
    "azurerm_machine_learning_workspace": ("Microsoft.MachineLearningServices/workspaces",),
    "azurerm_machine_learning_datastore_blobstorage": ("Microsoft.MachineLearningServices/workspaces/datastores",),
    "azurerm_batch_account": ("Microsoft.Batch/batchAccounts",),
    "azurerm_batch_pool": ("Microsoft.Batch/batchAccounts/pools",),
    "azurerm_data_factory": ("Microsoft.DataFactory/factories",),
    "azurerm_data_factory_credential_user_managed_identity": ("Microsoft.DataFactory/factories/credentials",),
    "azurerm_data_factory_linked_custom_service": ("Microsoft.DataFactory/factories/linkedservices",),
    "azurerm_role_assignment": ("Microsoft.Authorization/roleAssignments",),
    "azurerm_public_ip": ("Microsoft.Network/publicIPAddresses",),
    "azurerm_nat_gateway": ("Microsoft.Network/natGateways",),
    "azurerm_network_security_group": ("Microsoft.Network/networkSecurityGroups",),
    "azurerm_virtual_network": ("Microsoft.Network/virtualNetworks",),
    "azurerm_private_dns_zone": ("Microsoft.Network/privateDnsZones",),
    "azurerm_private_dns_zone_virtual_network_link": ("Microsoft.Network/privateDnsZones/virtualNetworkLinks",),
    # The DNS zone group is a block of the endpoint (Bicep declares it apart).
    "azurerm_private_endpoint": ("Microsoft.Network/privateEndpoints", "Microsoft.Network/privateEndpoints/privateDnsZoneGroups"),
    # Parts of resources Bicep declares inline: subnets are in the VNet's body, and the
    # associations are properties of the subnet and of the NAT gateway.
    "azurerm_subnet": (),
    "azurerm_subnet_network_security_group_association": (),
    "azurerm_subnet_nat_gateway_association": (),
    "azurerm_nat_gateway_public_ip_association": (),
    # An action (listKeys), not a resource.
    "azapi_resource_action": (),
}
PRIVATE_CONDITION = "var.private_networking ? 1 : 0"
EXPRESSION = re.compile(r"^\$\{(.*)\}$", re.S)
ADF_ROOT = "../../../adf"
# A set of the data-factory module's adf/ files: `toset([for f in keys(local.documents) : f if ...])`.
TRIGGER_KIND = "Microsoft.DataFactory/factories/triggers"
ADF_SELECTION = re.compile(r"toset\(\[for f in keys\(local\.documents\) : f if (.+)\]\)")


def evaluate(value, env: dict):
    """A literal, or an expression of `var.<name>` (from env), literals, `? :`, `&&`, `||`, `!`,
    `==`, `!=` and lists: what the firewall settings are written with."""
    if not isinstance(value, str):
        return value
    text = expression(value)
    if EXPRESSION.match(value) is None and text.startswith('"') and "${" not in text:
        return unquote(text)
    python = re.sub(r"\bvar\.(\w+)", lambda m: f"env[{m.group(1)!r}]", text)
    python = python.replace("&&", " and ").replace("||", " or ")
    python = re.sub(r"!(?!=)", " not ", python)
    python = re.sub(r"\btrue\b", "True", re.sub(r"\bfalse\b", "False", python))
    if " ? " in python:
        condition, rest = python.split(" ? ", 1)
        if_true, if_false = rest.split(" : ", 1)
        python = f"({if_true}) if ({condition}) else ({if_false})"
    try:
        return _evaluate(ast.parse(python.strip(), mode="eval").body, env)
    except (SyntaxError, KeyError, ValueError) as exc:
        raise StackError(f"cannot evaluate {text!r}: {exc}") from exc


def _evaluate(node, env: dict):
    """Only the node kinds `evaluate` produces: no calls, no names but env."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.List):
        return [_evaluate(item, env) for item in node.elts]
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "env":
        return env[_evaluate(node.slice, env)]
    if isinstance(node, ast.IfExp):
        return _evaluate(node.body if _evaluate(node.test, env) else node.orelse, env)
    if isinstance(node, ast.BoolOp):
        values = [_evaluate(v, env) for v in node.values]
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return not _evaluate(node.operand, env)
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], (ast.Eq, ast.NotEq)):
        equal = _evaluate(node.left, env) == _evaluate(node.comparators[0], env)
        return equal if isinstance(node.ops[0], ast.Eq) else not equal
    raise ValueError(f"{type(node).__name__} is not supported")


class StackError(Exception):
    """Something the comparison cannot read (message says what and where)."""


def expression(value) -> str:
    """'${a.b}' -> 'a.b'; a literal '"x"' -> '"x"'."""
    if isinstance(value, str):
        match = EXPRESSION.match(value)
        return match.group(1) if match else value
    return json.dumps(value)


@dataclass
class Module:
    directory: Path
    variables: dict
    outputs: dict
    locals: dict
    resources: list[tuple[str, str, dict]]
    calls: dict  # module name -> body (with source)


def read_module(directory: Path) -> Module:
    variables, outputs, local_values, found, calls = {}, {}, {}, [], {}
    for path in sorted(directory.glob("*.tf")):
        document = parse(path)
        variables.update({labels[0]: body for labels, body in labelled(document, "variable")})
        outputs.update({labels[0]: body for labels, body in labelled(document, "output")})
        calls.update({labels[0]: body for labels, body in labelled(document, "module")})
        for block in document.get("locals", []):
            local_values.update({k: v for k, v in block.items() if not k.startswith("__")})
    for path, kind, name, body in resources(directory):
        if path.parent == directory:
            found.append((kind, name, body))
    return Module(directory, variables, outputs, local_values, found, calls)


class Stack:
    """The root module and the modules it calls (one level, as terraform/ is laid out)."""

    def __init__(self, directory: Path = TERRAFORM_DIR):
        self.directory = directory
        self.root = read_module(directory)
        self.modules = {}
        for name, call in self.root.calls.items():
            source = unquote(call["source"])
            self.modules[name] = read_module((directory / source).resolve())

    # ---------------------------------------------------------------- resource kinds
    def kinds(self, private: bool) -> set[str]:
        """The ARM types deployed with private_networking = private."""
        return set(self.kind_counts(private))

    def kind_counts(self, private: bool) -> Counter:
        """How many resources of each ARM type are deployed with private_networking = private
        (a `for_each` over a local or a literal set counts its items; the deployer's roles as given)."""
        found: Counter = Counter()
        groups = [(None, self.root)] + list(self.modules.items())
        for name, module in groups:
            if name is not None and expression(self.root.calls[name].get("count", "")) == PRIVATE_CONDITION \
                    and not private:
                continue
            for kind, symbol, body in module.resources:
                for arm in self.arm_kinds(kind, symbol, module):
                    found[arm] += self.instances(body, module)
        return found

    def instances(self, body: dict, module: Module) -> int:
        if "for_each" not in body:
            return 1
        each = expression(body["for_each"])
        if module is self.modules.get("data_factory") and (files := self.adf_selection(each)) is not None:
            return len(files)  # adf/*.json, adf/triggers/*.json
        if match := re.fullmatch(r"local\.(\w+)", each):
            value = module.locals[match.group(1)]
            if isinstance(value, str):  # `{ for k, v in local.other : k => v if ... }`: all of it when set
                value = module.locals[re.search(r"local\.(\w+)", expression(value)).group(1)]
            return len([k for k in value if not k.startswith("__")])
        if match := re.fullmatch(r"toset\(\[(.*)\]\)", each):
            return len(re.findall(r'"[^"]*"', match.group(1)))
        raise StackError(f"{module.directory}: cannot count for_each = {each}")

    @staticmethod
    def arm_kinds(kind: str, symbol: str, module: Module) -> tuple[str, ...]:
        if kind == "azapi_resource":
            body = next(b for k, s, b in module.resources if (k, s) == (kind, symbol))
            return (unquote(body["type"]).split("@")[0],)
        if kind not in ARM_KINDS:
            raise StackError(f"{module.directory}: {kind}.{symbol}: no Azure resource kind for {kind}; "
                             "add it to terraform/stack.py ARM_KINDS (and its twin to bicep/).")
        return ARM_KINDS[kind]

    # ---------------------------------------------------------------- tracing references
    def trace(self, text: str, module_name: str | None = None) -> tuple[str, str]:
        """Follow `var.x` / `module.m.o` / `local.x` to the resource it reads: (its Azure
        resource kind, its Terraform name)."""
        module = self.root if module_name is None else self.modules[module_name]
        text = expression(text)
        for _ in range(10):
            if match := re.fullmatch(r"var\.(\w+)", text):
                if module_name is None:
                    raise StackError(f"root variable {match.group(1)} is not a resource")
                text = expression(self.root.calls[module_name][match.group(1)])
                module_name, module = None, self.root
            elif match := re.fullmatch(r"module\.(\w+)(?:\[0\])?\.(\w+)", text):
                module_name = match.group(1)
                module = self.modules[module_name]
                text = expression(module.outputs[match.group(2)]["value"])
            elif match := re.fullmatch(r'local\.(\w+)\["(\w+)"\]', text):
                text = expression(module.locals[match.group(1)][match.group(2)])
            elif match := re.match(r"((?:azurerm|azapi)_\w+)\.(\w+)", text):
                return self.arm_kinds(match.group(1), match.group(2), module)[0], match.group(2)
            else:
                break
        raise StackError(f"cannot follow {text!r} to a resource")

    # ---------------------------------------------------------------- role assignments
    def role_assignments(self) -> dict[str, tuple[str, tuple[str, str], str]]:
        """name -> (role key, principal (kind, name) or ('deployer', ''), scope's Azure resource
        kind), from every module's `service_assignments` and `deployer_roles` locals."""
        found = {}
        for module_name, module in self.modules.items():
            groups = [(module.locals.get("service_assignments", {}), False),
                      (module.locals.get("deployer_roles", {}), True)]
            for assignments, deployer in groups:
                for name, item in assignments.items():
                    if name.startswith("__"):
                        continue
                    role = expression(item["role"])
                    match = re.fullmatch(r"local\.roles(?:\.(\w+)|\[var\.(\w+)\])", role)
                    if not match:
                        raise StackError(f"{module_name}: {name}: role {role!r} is not local.roles.<key>")
                    role_key = match.group(1) or f"[{match.group(2)}]"
                    principal = ("deployer", "") if deployer else self.trace(item["principal_id"], module_name)
                    found[name] = (role_key, principal, self.trace(item["scope"], module_name)[0])
        return found

    def role_ids(self) -> dict[str, str]:
        """Every module's `roles` local (key -> built-in role id); a key has one id everywhere."""
        ids: dict[str, str] = {}
        for module_name, module in self.modules.items():
            for key, value in module.locals.get("roles", {}).items():
                if key.startswith("__"):
                    continue
                if ids.setdefault(key, unquote(value)) != unquote(value):
                    raise StackError(f"{module_name}: roles.{key} is {unquote(value)}, elsewhere {ids[key]}")
        return ids

    # ---------------------------------------------------------------- outputs and ADF
    def outputs(self) -> dict[str, str]:
        return {name: expression(body["value"]) for name, body in self.root.outputs.items()}

    def adf_files(self) -> list[str]:
        """The adf/ files the data-factory module reads (its fileset patterns, resolved)."""
        module = self.modules["data_factory"]
        patterns = re.findall(r'fileset\(local\.adf_dir, "([^"]+)"\)', expression(module.locals["files"]))
        adf = (module.directory / ADF_ROOT).resolve()
        return sorted({p.relative_to(adf).as_posix() for pattern in patterns for p in adf.glob(pattern)})

    def adf_selection(self, each: str) -> list[str] | None:
        """The adf/ files a data-factory module's `for_each = local.X` deploys, X being
        `toset([for f in keys(local.documents) : f if CONDITION])` with a `strcontains` or
        `startswith` of f and a literal (or its negation) as CONDITION; None if X is not such a set."""
        module = self.modules["data_factory"]
        name = re.fullmatch(r"local\.(\w+)", expression(each))
        selected = name and ADF_SELECTION.fullmatch(expression(module.locals.get(name.group(1), "")))
        if not selected:
            return None
        match = re.fullmatch(r'(!?)(strcontains|startswith)\(f, "([^"]*)"\)', selected.group(1).strip())
        if not match:
            raise StackError(f"{module.directory}: cannot evaluate the file selection {selected.group(1)!r}")
        negated, function, text = match.groups()
        test = (lambda f: text in f) if function == "strcontains" else (lambda f: f.startswith(text))
        return [f for f in self.adf_files() if test(f) != bool(negated)]

    def triggers(self) -> list[tuple[str, dict]]:
        """(address, body) of every resource that creates or acts on a Data Factory trigger:
        an azapi_* resource of that type, an azurerm_data_factory_trigger_*, or one that
        refers to either (an action on a trigger's id)."""
        every = [(f"{kind}.{symbol}", kind, body) for module in [self.root, *self.modules.values()]
                 for kind, symbol, body in module.resources]
        triggers = {address for address, kind, body in every
                    if kind.startswith("azurerm_data_factory_trigger_")
                    or (kind.startswith("azapi_") and unquote(body.get("type", "")).split("@")[0] == TRIGGER_KIND)}
        return [(address, body) for address, _, body in every
                if address in triggers or any(re.search(rf"\b{re.escape(t)}\b", json.dumps(body)) for t in triggers)]

    def fill(self, relative: str, values: dict[str, str]) -> dict:
        """An adf/ file with its placeholders filled as the module's `documents` local does."""
        module = self.modules["data_factory"]
        pattern = re.search(r'replace\(text, "/(.+?)/"', expression(module.locals["documents"])).group(1)
        text = ((module.directory / ADF_ROOT) / relative).read_text()
        return json.loads(re.sub(pattern, lambda m: values[m.group(1)], text))

    def placeholder_source(self) -> str:
        """What the root passes as the data-factory module's placeholders."""
        return expression(self.root.calls["data_factory"]["placeholders"])

    # ---------------------------------------------------------------- firewalls
    # The resource of each module whose network access a firewall decides (bicep/flows.py FIREWALLED).
    FIREWALLED = {"storage": "azurerm_storage_account", "staging_storage": "azurerm_storage_account",
                  "keyvault": "azurerm_key_vault", "registry": "azurerm_container_registry",
                  "ml_workspace": "azurerm_machine_learning_workspace", "batch": "azurerm_batch_account"}

    def firewall(self, module_name: str, private: bool, allowed_ip: str) -> Firewall:
        """The firewall of a module's resource with private_networking = private, in the terms
        of bicep/flows.py (open to all networks, IP rules, trusted services)."""
        root = {"private_networking": private, "allowed_ip_address": allowed_ip}
        call = self.root.calls[module_name]
        env = {name: evaluate(call[name], root) for name in call if name in self.modules[module_name].variables
               and name in ("private_networking", "allowed_ip_address")}
        body = next(b for k, _, b in self.modules[module_name].resources if k == self.FIREWALLED[module_name])
        if body.get("public_network_access_enabled") is False:
            return Firewall(False)
        acls = self._acls(body, env)
        if acls is None or evaluate(acls.get("default_action", '"Allow"'), env) == "Allow":
            return Firewall(True)
        ips = acls.get("ip_rules")
        ips = tuple(evaluate(ips, env)) if ips is not None else tuple(self._dynamic_ips(acls, env))
        bypass = evaluate(acls.get("bypass", body.get("network_rule_bypass_option", '""')), env)
        return Firewall(False, tuple(ip.removesuffix("/32") for ip in ips), "AzureServices" in str(bypass))

    @staticmethod
    def _acls(body: dict, env: dict) -> dict | None:
        for name in ("network_rules", "network_acls"):
            if name in body:
                return body[name][0]
        for entry in body.get("dynamic", []):
            for label, dynamic in entry.items():
                if unquote(label) == "network_rule_set" and evaluate(dynamic["for_each"], env):
                    return dynamic["content"][0]
        return None

    @staticmethod
    def _dynamic_ips(acls: dict, env: dict) -> list[str]:
        ips = []
        for entry in acls.get("dynamic", []):
            for label, dynamic in entry.items():
                if unquote(label) == "ip_rule":
                    for value in evaluate(dynamic["for_each"], env):
                        ips.append(expression(dynamic["content"][0]["ip_range"]).strip('"')
                                   .replace("${ip_rule.value}", value))
        return ips

    # ---------------------------------------------------------------- pool
    def pool(self) -> dict:
        batch = self.modules["batch"]
        pool = next(body for kind, _, body in batch.resources if kind == "azurerm_batch_pool")
        start = pool["start_task"][0]
        formula = expression(batch.locals["auto_scale_formula"])
        lines = [json.loads(f'"{s}"') for s in re.findall(r'"((?:[^"\\]|\\.)*)"', formula.split(",", 1)[1])]
        files = {}
        for name, value in start["common_environment_properties"].items():
            path = re.search(r'file\("\$\{path\.module\}/([^"]+)"\)', value).group(1)
            files[name] = (batch.directory / path).resolve()
        identity = start["user_identity"][0]["auto_user"][0]
        return {
            "image": {k: unquote(v) for k, v in batch.locals["image_reference"].items() if not k.startswith("__")},
            "node_agent_sku_id": unquote(batch.locals["node_agent_sku_id"]),
            "formula": [line.replace("${var.max_nodes}", "{maxNodes}") for line in lines],
            "evaluation_interval": unquote(pool["auto_scale"][0]["evaluation_interval"]),
            "command_line": unquote(start["command_line"]),
            "environment_files": files,
            "auto_user": {"scope": unquote(identity["scope"]), "elevationLevel": unquote(identity["elevation_level"])},
            "max_task_retry_count": start["task_retry_maximum"],
            "wait_for_success": start["wait_for_success"],
            "task_slots_per_node": pool["max_tasks_per_node"],
            "inter_node_communication": unquote(pool["inter_node_communication"]),
            "target_node_communication_mode": unquote(pool["target_node_communication_mode"]),
        }
