"""Offline checks of the Terraform stack in this folder (parse, provider schema, parity with bicep/)."""
