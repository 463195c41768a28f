"""The plan: what register-and-deploy, rollback and teardown do to each resource, worked
out the same way for every target.

A backend reads what exists, turns it and the spec into the comparable states below
(`compute_state`, `endpoint_state`, `deployment_state`: the same keys, defaults and
spellings whatever the target) and asks this module for the `Change`; it then applies it.
So both targets print the same plan lines for the same specs and state.
"""
from __future__ import annotations

from deployer import azureml_rules as rules
from deployer.entities import CREATE, DELETE, NO_OP, UPDATE, Change

SET_DEFAULT = "set as the endpoint's default"
WITH_ENDPOINT = "with the endpoint"
MISSING = "does not exist"


# ---------------------------------------------------------------------- comparable states


def compute_state(*, size=None, min_instances=None, max_instances=None,
                  idle_time_before_scale_down=None, tier=None, identities=()) -> dict:
    """A cluster as compared: Azure ML's defaults for what is unset, sizes and tiers in one
    case (the service answers STANDARD_DS3_V2 and LowPriority for Standard_DS3_v2 and
    low_priority), user-assigned identities by resource id."""
    values = rules.cluster_settings({"size": size, "min_instances": min_instances,
                                     "max_instances": max_instances, "tier": tier,
                                     "idle_time_before_scale_down": idle_time_before_scale_down})
    return {
        "size": str(values["size"]).lower(),
        "min_instances": int(values["min_instances"]),
        "max_instances": int(values["max_instances"]),
        "idle_time_before_scale_down": int(values["idle_time_before_scale_down"]),
        "tier": str(values["tier"]).lower().replace("_", ""),
        "identities": sorted(str(i).lower() for i in identities or ()),
    }


def endpoint_state(*, description=None, auth_mode=None) -> dict:
    return {"description": description or "",
            "auth_mode": str(getattr(auth_mode, "value", auth_mode) or "aad_token").lower()}


def deployment_state(*, model: str, compute, settings: dict, environment_variables=None) -> dict:
    """A deployment as compared: its model ('name:version', or the spec's reference), the
    cluster's name, every batch setting (Azure ML's default where unset) and its
    environment variables."""
    return {"model": model, "compute": arm_name(compute), **rules.with_defaults(settings),
            "environment_variables": {str(k): str(v) for k, v in (environment_variables or {}).items()}}


def arm_name(value) -> str:
    """'azureml:cpu-cluster', '/subscriptions/.../computes/cpu-cluster' → 'cpu-cluster'."""
    text = str(getattr(value, "id", None) or value or "")
    return text.removeprefix("azureml:").rstrip("/").split("/")[-1]


def model_reference(value) -> str:
    """A model as the spec names it ('azureml:iris-classifier@latest') → 'iris-classifier@latest'."""
    return str(value or "").removeprefix("azureml:")


# ---------------------------------------------------------------------- changes


def diff(have: dict, want: dict) -> str:
    """'key: old → new' for each key of `want` whose value differs, in `want`'s order."""
    return ", ".join(f"{k}: {have.get(k)} → {want[k]}" for k in want if have.get(k) != want[k])


def resource_change(kind: str, name: str, have: dict | None, want: dict, *,
                    created: str = "", stale: str = "") -> Change:
    """create (with `created` as detail) when nothing exists, update with what differs, or
    no-op. `stale` says why an unchanged resource is applied again (a failed provisioning)."""
    if have is None:
        return Change(kind, name, CREATE, created)
    detail = diff(have, want) or stale
    return Change(kind, name, UPDATE if detail else NO_OP, detail)


def compute_change(name: str, have: dict | None, want: dict, *, stale: str = "") -> Change:
    return resource_change("compute", name, have, want, stale=stale, created=(
        f"{want['size']}, {want['min_instances']}-{want['max_instances']} nodes"))


def endpoint_change(name: str, have: dict | None, want: dict, *, stale: str = "") -> Change:
    return resource_change("endpoint", name, have, want, stale=stale)


def deployment_change(name: str, have: dict | None, want: dict, *, is_default: bool,
                      set_default: bool, stale: str = "") -> Change:
    """The deployment's change; making it the endpoint's default is part of it (an update
    of an otherwise unchanged deployment)."""
    change = resource_change("deployment", name, have, want, stale=stale,
                             created=f"model {want['model']}")
    if not set_default or is_default:
        return change
    detail = "; ".join(x for x in (change.detail, SET_DEFAULT) if x)
    return Change("deployment", name, UPDATE if change.action == NO_OP else change.action, detail)


def needs_write(have: dict | None, want: dict, stale: str = "") -> bool:
    """Whether the resource itself must be written (not only the endpoint's default)."""
    return have is None or have != want or bool(stale)


def default_change(endpoint: str, current: str, wanted: str) -> Change:
    """Routing the endpoint's jobs to deployment `wanted` (currently `current`, '' for none)."""
    if current == wanted:
        return Change("default-deployment", endpoint, NO_OP, wanted)
    return Change("default-deployment", endpoint, UPDATE, f"{current or '(none)'} → {wanted}")


def model_change(name: str, *, existing: str = "", created: str = "", source: str = "") -> Change:
    """Registering a model from `source`: no-op when version `existing` has the same content,
    else the `created` version (or, planning, a new one)."""
    if existing:
        return Change("model", name, NO_OP, f"version {existing} has the same content")
    return Change("model", name, CREATE,
                  f"version {created} from {source}" if created else f"new version from {source}")


def delete_change(kind: str, name: str, exists: bool, detail: str = "") -> Change:
    return Change(kind, name, DELETE, detail) if exists else Change(kind, name, NO_OP, MISSING)


def teardown_changes(endpoint: str, deployments: dict[str, bool] | None, compute: str,
                     compute_exists: bool) -> list[Change]:
    """Deleting the endpoint's deployments (name → is the default; None when the endpoint
    does not exist), the endpoint and the cluster. The default deployment goes last, with
    the endpoint: Azure ML deletes no default deployment on its own."""
    changes = [delete_change("deployment", name, True, WITH_ENDPOINT if is_default else "")
               for name, is_default in sorted((deployments or {}).items(),
                                              key=lambda item: (item[1], item[0]))]
    changes.append(delete_change("endpoint", endpoint, deployments is not None))
    changes.append(delete_change("compute", compute, compute_exists))
    return changes


def plan_line(change: Change, dry_run: bool) -> str:
    """One line of a plan or of what was done: 'deployment x: would create (model m:1)'."""
    verb = "would " + change.action if dry_run and change.action != NO_OP else change.action
    return f"{change.kind} {change.name}: {verb}" + (f" ({change.detail})" if change.detail else "")
