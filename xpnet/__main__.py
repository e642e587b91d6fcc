"""``python -m xpnet``: the command line (see ``xpnet.cli``)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
