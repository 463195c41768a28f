"""`python -m workspace`: manage the local services of the embedded default target."""
from workspace.cli import cli

cli(prog_name="python -m workspace")
