"""The published runs of a sweep, read from their manifests (no queue needed).

A sweep's runner records `"sweep": {"id", "line"}` in each manifest. A line may have been
trained more than once (a runner died after publishing, before its result was recorded):
its first complete run (earliest `created`, then run id) is the one that counts. Runs are
ranked as the leaderboard ranks them (workspace/quality.py): a run with too few test rows
comes last, so the best run is one whose accuracy means something, if the sweep has one.
"""
from __future__ import annotations

from dataclasses import dataclass

from workspace.datastore import Datastore
from workspace.errors import ConfigError, NotFound
from workspace.published import MANIFEST_NAME, ManifestError, PublishedRun, _read_manifest, _warn
from workspace.quality import rank_key

LATEST = "latest"


@dataclass(frozen=True)
class SweepRun:
    sweep_id: str
    line: int
    run: PublishedRun

    @property
    def rank_key(self) -> tuple:
        return rank_key(self.run.metrics, self.line)


def _sweep_manifests(store: Datastore, prefix: str) -> list[tuple[dict, str, PublishedRun]]:
    """(sweep entry, blob name, run) of each manifest of a sweep's run. A manifest that is
    not JSON or not a trainer's is skipped with the warning list_published_runs gives."""
    start = prefix.strip("/") + "/" if prefix.strip("/") else ""
    found = []
    for blob in store.list(start):
        if not blob.name.endswith("/" + MANIFEST_NAME):
            continue
        try:
            manifest = _read_manifest(store, blob.name)
            sweep = manifest.get("sweep") if isinstance(manifest, dict) else None
            if isinstance(sweep, dict):
                found.append((sweep, blob.name, PublishedRun.from_manifest(blob.name, manifest)))
        except ManifestError as exc:
            _warn(f"skipped {store.container}/{blob.name}: {exc.message}")
    return found


def sweep_runs(store: Datastore, prefix: str, sweep_id: str) -> list[SweepRun]:
    """One complete run per line of the sweep (its first), best first.

    sweep_id 'latest' means the newest sweep with a published run (ids sort by time)."""
    manifests = _sweep_manifests(store, prefix)
    if sweep_id == LATEST:
        if not manifests:
            raise NotFound(f"No sweep has published a run under '{store.container}/{prefix}'.",
                           "Start one: `python -m adf sweep start --grid data/sweep.csv`.")
        sweep_id = max(sweep["id"] for sweep, _, _ in manifests)
    first: dict[int, SweepRun] = {}
    for sweep, _, run in manifests:
        if sweep["id"] != sweep_id:
            continue
        entry = SweepRun(sweep_id, int(sweep["line"]), run)
        known = first.get(entry.line)
        if known is None or (entry.run.created, entry.run.run_id) < (known.run.created,
                                                                     known.run.run_id):
            first[entry.line] = entry
    if not first:
        raise NotFound(f"Sweep '{sweep_id}' has no complete run under "
                       f"'{store.container}/{prefix}'.",
                       "Check the id with `python -m adf sweep list`; a line counts once its "
                       "manifest is written.")
    return sorted(first.values(), key=lambda r: r.rank_key)


def best_sweep_run(store: Datastore, prefix: str, sweep_id: str) -> SweepRun:
    if not sweep_id:
        raise ConfigError("--sweep needs a sweep id or 'latest'.")
    return sweep_runs(store, prefix, sweep_id)[0]
