"""``python -m eventstore_async.emulator [--host H] [--port N] [--data-dir DIR] [--verbose]``."""

import sys

from eventstore_async.emulator._server import main

if __name__ == "__main__":
    sys.exit(main())
