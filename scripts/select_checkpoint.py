#!/usr/bin/env python
"""Which checkpoint, which layer, which pooling: transferability scores of frozen features, in seconds.

    python scripts/select.py --data rotten_tomatoes --candidates minilm smollm2 --layers all \
        --pooling mean last --validate --out runs/select-rt

See `python scripts/select.py --help`.
"""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))

if __name__ != "__main__":
    # `python scripts/<any>.py` puts this folder first on sys.path, so a script beside this file that imports
    # the standard library's `select` (subprocess does) finds this file instead. Be that module: load the real
    # one from the rest of the path and put it in our place (the import statement returns sys.modules[name]).
    import importlib.machinery
    import importlib.util

    _spec = importlib.machinery.PathFinder.find_spec(__name__, [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE])
    _real = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_real)
    sys.modules[__name__] = _real
else:
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]  # the same, for this script
    from nlp_transfer.cli import run_cli, select_main

    sys.exit(run_cli(select_main))
