"""``python -m unrollgraph ...`` runs the command-line tool (:mod:`unrollgraph.cli`)."""

import sys

from .cli import main

sys.exit(main())
