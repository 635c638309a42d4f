"""``python -m samkit.train distill|finetune ...`` (what ``torchrun -m samkit.train`` runs): the
``samkit train`` command group, with the CLI's error reporting; only rank 0 prints errors in full."""
from __future__ import annotations

import sys


def main() -> int:
    from ..cli.main import main as cli_main

    return cli_main(["train", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
