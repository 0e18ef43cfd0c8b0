import sys

if sys.argv[1:2] == ["health"]:  # before the CLI loads llama.cpp (server/healthcheck.py)
    from server.healthcheck import main as health

    sys.exit(health(sys.argv[2:]))

from server.cli import main

sys.exit(main())
