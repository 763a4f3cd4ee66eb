"""python -m glibloop [-m module | script.py] [args...]

With no arguments, an asyncio REPL on the GLib main loop; with a script or
``-m module``, runs it as ``__main__`` with glibloop as asyncio's event loop.
See glibloop._cli.
"""

import sys

from glibloop._cli import main

if __name__ == "__main__":
    sys.exit(main())
