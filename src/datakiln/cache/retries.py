"""Count the object-store requests this process retried, for ``report.json``.

botocore (its ``standard`` retry mode) and s3fs retry on their own; each says so in a debug
log record. A filter on those two loggers counts the records and passes on only what the
loggers' configured level would have let through, so turning the count on changes no output.
Not counted: aiohttp's own silent resend of a request whose pooled connection was closed.
"""

from __future__ import annotations

import logging
import threading

# Logger name and the start of the message each retry logs.
_SOURCES = {
    "botocore.retries.standard": "Retry needed, retrying request",
    "s3fs": "Retryable error",
}
_lock = threading.Lock()
_count = 0
_installed = False


class _Counter(logging.Filter):
    def __init__(self, prefix: str, level: int) -> None:
        super().__init__()
        self.prefix, self.level = prefix, level

    def filter(self, record: logging.LogRecord) -> bool:
        global _count
        if isinstance(record.msg, str) and record.msg.startswith(self.prefix):
            with _lock:
                _count += 1
        return record.levelno >= self.level


def count_retries() -> None:
    """Start counting (once per process; later calls do nothing)."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
    for name, prefix in _SOURCES.items():
        log = logging.getLogger(name)
        log.addFilter(_Counter(prefix, log.getEffectiveLevel()))
        log.setLevel(logging.DEBUG)


def note_retry() -> None:
    """Count a retry datakiln made itself (a body read cut short)."""
    global _count
    with _lock:
        _count += 1


def retries() -> int:
    """Requests retried in this process since counting started."""
    return _count
