"""Deployer: register the trained MLflow model and serve it from a batch endpoint.

Layers: `cli` (thin click commands) → `app` (register-and-deploy, invoke, status, teardown)
→ a `Backend` (`backends.local` embedded default, `backends.azure` Azure ML). Both backends
read the same YAML specs in `deployer/specs/` (the `az ml` schema).
"""
