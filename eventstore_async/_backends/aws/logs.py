"""Keep session tokens out of logs.

With DEBUG logging on, botocore logs each request's headers and canonical request,
which carry ``X-Amz-Security-Token`` in clear. A filter on botocore's and
aiobotocore's loggers rewrites any record that holds one. (Secret keys are never
logged; signatures are derived and expire.)
"""

from __future__ import annotations

import logging
import re

__all__ = ["install_redaction"]

_TOKEN = re.compile(
    r"""(x-amz-security-token['"]?\s*[:=]\s*b?['"]?)([A-Za-z0-9+/=%_.-]{8,})""",
    re.IGNORECASE,
)
_PREFIXES = ("botocore", "aiobotocore", "aioboto3")


class _RedactTokens(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if _TOKEN.search(message):
            record.msg = _TOKEN.sub(r"\1<redacted>", message)
            record.args = None
        return True


_FILTER = _RedactTokens()


def install_redaction() -> None:
    """Attach the filter to every botocore/aiobotocore logger (idempotent)."""
    names = [name for name in logging.root.manager.loggerDict if name.startswith(_PREFIXES)]
    for name in [*_PREFIXES, *names]:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
