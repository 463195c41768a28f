"""`make bench`: scoring throughput and memory of the local batch endpoint against a floor
and against `mlflow models predict` (see docs/performance.md)."""
