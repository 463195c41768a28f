"""`python -m deployer`: register the model and serve it from a batch endpoint."""
from deployer.cli import cli

cli(prog_name="python -m deployer")
