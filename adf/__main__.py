"""`python -m adf`: the ADF training pipeline (stage, trigger, status, logs)."""
from adf.cli import cli

cli(prog_name="python -m adf")
