"""``python -m xpnet``: the command line (see ``xpnet.cli``)."""

import sys

from .cli import main

__all__: list[str] = []  # nothing to import: it runs the command line

if __name__ == "__main__":
    sys.exit(main())
