"""The ``eventstore`` command line (the ``cli`` extra: click and rich).

Only this subpackage imports click and rich; the library never does.
"""

from eventstore_async.cli._app import EXIT_CODES, cli, main

__all__ = ["EXIT_CODES", "cli", "main"]
