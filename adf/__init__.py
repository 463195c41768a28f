"""The ADF training pipeline: its ARM JSON definitions and `python -m adf`.

Kept light to import: the Azure SDKs are imported only by the Azure backend.
"""
