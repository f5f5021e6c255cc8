"""Posting run events to a webhook (``--notify URL``), without ever holding up the rollout.

Events are posted as JSON, one request each, in order, by a single background thread fed
through a bounded queue: a slow or dead endpoint delays only the notifications, never the
drain. Delivery is best effort: a failed post is not retried (the next event will be), and the
caller learns of failures through ``post``'s result and ``last_error`` so it can warn.
"""

from __future__ import annotations

import http.client
import json
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from upgradectl import __version__
from upgradectl.events import Event
from upgradectl.wording import chat_text

USER_AGENT = f"upgradectl/{__version__}"
# The events a webhook hears about: the run starting, each node finishing, the run ending.
NOTIFIED_KINDS = frozenset({"run-start", "node-done", "summary"})


def check_url(url: str) -> str:
    """``url`` when it is an http:// or https:// URL; ValueError otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"--notify: expected an http:// or https:// URL, got {url!r}")
    return url


class Notifier:
    """Posts events to ``url`` from a background thread; ``timeout`` bounds each request."""

    def __init__(self, url: str, timeout: float = 5.0, max_pending: int = 1000) -> None:
        self.url = check_url(url)
        self.timeout = timeout
        self.last_error: str | None = None
        """Why the latest delivery failed or an event was dropped; None after a success."""
        self._undelivered = 0
        self._closed = False
        self._lock = threading.RLock()  # post() holds it while it may drop an event
        # Bodies to post, in order; None, queued by close(), stops the worker.
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=max_pending)
        self._worker = threading.Thread(target=self._deliver_all, name="upgradectl-notify")
        self._worker.daemon = True  # a hung endpoint must not keep the process alive
        self._worker.start()

    def post(self, event: Mapping[str, Any]) -> bool:
        """Queue ``event`` for posting; never blocks and never raises.

        Returns False when the event is dropped (the queue is full or the notifier closed) or
        when the latest delivery failed (the endpoint is failing; this event is still queued);
        ``last_error`` then says why.
        """
        try:
            body = json.dumps(event, default=str).encode()
        except ValueError as exc:  # a circular structure: a bug, but not one to stop a rollout
            return self._drop(f"event not serialisable: {exc}")
        with self._lock:
            if self._closed:
                return self._drop("notifier already closed")
            try:
                self._queue.put_nowait(body)
            except queue.Full:
                return self._drop(f"{self._queue.maxsize} events waiting; event dropped")
            return self.last_error is None

    def close(self, timeout: float = 10.0) -> bool:
        """Deliver what is queued, waiting at most ``timeout`` seconds.

        Returns True when every event posted was delivered. Events still queued at the
        deadline are abandoned to the background thread, which dies with the process.
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            self._closed = True
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return False
        self._worker.join(max(0.0, deadline - time.monotonic()))
        return not self._worker.is_alive() and self._undelivered == 0

    def _drop(self, reason: str) -> bool:
        """Count an event that will not be delivered, and say why."""
        with self._lock:
            self._undelivered += 1
            self.last_error = reason
        return False

    def _deliver_all(self) -> None:
        """The worker: post each queued body in order until close() says stop."""
        while (body := self._queue.get()) is not None:
            error = self._deliver(body)
            if error is None:
                self.last_error = None
            else:
                self._drop(error)

    def _deliver(self, body: bytes) -> str | None:
        """POST one body; the error text if that failed, else None."""
        request = urllib.request.Request(  # noqa: S310 - the scheme was checked in __init__
            self.url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": USER_AGENT},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                response.read()
        except urllib.error.HTTPError as exc:
            return f"{self.url}: HTTP {exc.code} {exc.reason}"
        except urllib.error.URLError as exc:
            return f"{self.url}: {exc.reason}"
        except (OSError, http.client.HTTPException) as exc:  # timeouts, resets, bad replies
            return f"{self.url}: {str(exc) or type(exc).__name__}"
        return None


class Notifications:
    """An event sink that POSTs the run's milestones to a webhook, never failing the run."""

    def __init__(self, url: str) -> None:
        self.notifier = Notifier(url)

    def __call__(self, event: Event) -> None:
        if event.kind in NOTIFIED_KINDS:
            # `text` is what Slack- and Mattermost-style incoming webhooks show; the rest is data.
            self.notifier.post({**event.as_dict(), "text": chat_text(event)})

    def close(self) -> str | None:
        """Deliver what is queued (bounded wait); the last error, if any delivery failed."""
        delivered = self.notifier.close(timeout=10.0)
        return None if delivered else (self.notifier.last_error or "not every event was delivered")
