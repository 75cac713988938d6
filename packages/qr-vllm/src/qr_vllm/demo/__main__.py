"""``python -m qr_vllm.demo``: see :mod:`qr_vllm.demo`."""

import sys

from qr_vllm.demo._cli import main

if __name__ == "__main__":
    sys.exit(main())
