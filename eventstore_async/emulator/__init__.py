"""The embedded local emulator: moto's DynamoDB + S3 in a subprocess.

Importing this package is cheap: moto is imported only by the server subprocess
(``python -m eventstore_async.emulator``), never by the process that uses :class:`Emulator`.
"""

from eventstore_async.emulator._process import Emulator, run_emulator

__all__ = ["Emulator", "run_emulator"]
