"""``python -m eventstore_async.emulator [--host 127.0.0.1] [--port N] [--verbose]``."""

import sys

from eventstore_async.emulator._server import main

if __name__ == "__main__":
    sys.exit(main())
