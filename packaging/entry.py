"""The frozen binary's entry point: the same command line as ``python -m server``."""

import sys

if __name__ == "__main__":
    # A container's health check, without loading llama.cpp (see server/healthcheck.py).
    if sys.argv[1:2] == ["health"]:
        from server.healthcheck import main as health

        sys.exit(health(sys.argv[2:]))
    from server.cli import main

    sys.exit(main())
