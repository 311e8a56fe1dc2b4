"""``python -m nlp_transfer COMMAND ...``: the ``nlp-transfer`` command, also for ``accelerate launch -m nlp_transfer train ...``."""

import sys

from nlp_transfer.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
