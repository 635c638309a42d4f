"""``python -m samkit ...`` is the ``samkit`` command line."""
import sys

from samkit.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
