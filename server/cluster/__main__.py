"""``python -m server.cluster`` (``make cluster``)."""

import sys

from server.cluster.local import main

sys.exit(main())
