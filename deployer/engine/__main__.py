"""`python -m deployer.engine <job dir>`: run one batch scoring job (started detached by
the local backend's `invoke`)."""
import sys

from deployer.engine.job import main

if __name__ == "__main__":
    sys.exit(main())
