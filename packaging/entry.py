"""The frozen binary's entry point: the same command line as ``python -m server``."""

import sys

from server.cli import main

if __name__ == "__main__":
    sys.exit(main())
