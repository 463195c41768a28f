"""Shared foundation of the CLIs: settings, the workspace datastore and the local services.

Kept light to import: the Azure SDKs are imported only where they are used.
"""
