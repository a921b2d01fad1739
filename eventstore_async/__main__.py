"""``python -m eventstore_async``: the ``eventstore`` command (needs the ``cli`` extra)."""

import sys

try:
    from eventstore_async.cli import main
except ImportError as missing:  # click or rich absent: say which extra brings them
    sys.exit(
        f"the eventstore command needs the cli extra ({missing.name} is missing): "
        "pip install 'eventstore-async[cli]'"
    )

if __name__ == "__main__":
    sys.exit(main())
