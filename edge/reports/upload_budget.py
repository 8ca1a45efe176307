"""How many provider report body bytes one edge process holds at once, and how long one may take.

Every body is read into memory before its signature can be checked (the signature of Mailgun and
SNS is inside the body). Without a bound, a thousand connections each sending most of a 1 MiB
body, slowly, hold a gigabyte. So:

- a body with a Content-Length reserves that many bytes before its first byte is read; a chunked
  one reserves as its chunks arrive. Above TRACKER_REPORT_UPLOAD_BUDGET_BYTES in flight the
  request gets 503 with Retry-After, unread: providers retry later, and the pixel routes keep
  their memory;
- the whole body must arrive within TRACKER_REPORT_BODY_TIMEOUT_S (408, and the edge stops
  reading), so a body trickled one byte at a time gives its reservation back soon.

The reservation is released when the request's reports have been read, not when the bytes are
read: the parsed body lives until then.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.datastructures import Headers
from starlette.requests import Request

from edge.reports.base import ReportError
from tracker.config import SettingsError
from tracker.contract.numbers import content_length

# Refusals sent before the body was read: the connection cannot carry another request after an unread body.
CLOSE = {"connection": "close"}


class UploadBudget:
    """Bytes of provider report bodies in flight in this process, bounded; `read` is the only way in."""

    def __init__(self, budget_bytes: int, max_body_bytes: int, timeout_s: float) -> None:
        if budget_bytes < max_body_bytes:
            raise SettingsError("TRACKER_REPORT_UPLOAD_BUDGET_BYTES: must be at least TRACKER_REPORT_MAX_BODY_BYTES")
        self.budget_bytes = budget_bytes
        self.max_body_bytes = max_body_bytes
        self.timeout_s = timeout_s
        self.in_flight = 0
        # Bodies are cut off after timeout_s, so a reservation comes free within about that long.
        self._busy_headers = {"retry-after": str(max(1, math.ceil(timeout_s))), **CLOSE}

    def _reserve(self, size: int) -> None:
        if self.in_flight + size > self.budget_bytes:
            raise ReportError(503, "too many provider report uploads in flight", self._busy_headers)
        self.in_flight += size

    def declared_size(self, headers: Headers) -> int | None:
        """The Content-Length (None: chunked), refused with 413 when over the limit."""
        declared = content_length(headers.get("content-length", ""), self.max_body_bytes)
        if declared is not None and declared > self.max_body_bytes:
            raise ReportError(413, f"body over {self.max_body_bytes} bytes", CLOSE)
        return declared

    @asynccontextmanager
    async def read(self, request: Request) -> AsyncIterator[bytes]:
        """The body, read within the size limit, the budget and the deadline; refused with a `ReportError`."""
        limit = self.max_body_bytes
        declared = self.declared_size(request.headers)
        reserved = 0
        try:
            if declared is not None:
                self._reserve(declared)
                reserved = declared
            chunks: list[bytes] = []
            size = 0
            try:
                async with asyncio.timeout(self.timeout_s):
                    async for chunk in request.stream():
                        size += len(chunk)
                        if size > limit:
                            raise ReportError(413, f"body over {limit} bytes", CLOSE)
                        if size > reserved:  # chunked, or more than declared: reserve as it comes
                            self._reserve(size - reserved)
                            reserved = size
                        chunks.append(chunk)
            except TimeoutError:
                raise ReportError(408, f"body not received within {self.timeout_s:g} s", CLOSE) from None
            body = b"".join(chunks)
            del chunks
            yield body
        finally:
            self.in_flight -= reserved
