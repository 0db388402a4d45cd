"""``python -m edge VERB ...`` (also what ``torchrun --nproc_per_node N -m edge train ...`` runs)."""

import sys

from edge.cli.main import main

sys.exit(main())
