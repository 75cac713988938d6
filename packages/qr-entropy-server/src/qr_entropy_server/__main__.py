"""``python -m qr_entropy_server``: same as the ``qr-entropy-server`` command."""

import sys

from qr_entropy_server.cli import main

sys.exit(main())
