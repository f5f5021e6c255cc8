"""Webhook notifications, posted to a real HTTP server on loopback."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest

from upgradectl import __version__
from upgradectl.notify import Notifier

DEADLINE = 10.0  # generous bound for things that take milliseconds


@dataclass
class Received:
    """One request as the webhook saw it."""

    path: str
    headers: dict[str, str]
    event: Any


class WebhookServer(HTTPServer):
    """A webhook on 127.0.0.1 that records what it receives.

    It answers one request at a time, like a slow endpoint would; clear ``gate`` to make it
    hold each request until the gate is set again.
    """

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), RecordingHandler)
        self.received: list[Received] = []
        self.status = 204
        self.gate = threading.Event()
        self.gate.set()
        self.holding = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


class RecordingHandler(BaseHTTPRequestHandler):
    server: WebhookServer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.holding.set()
        self.server.gate.wait(DEADLINE)
        self.server.received.append(Received(self.path, dict(self.headers), json.loads(body)))
        self.send_response(self.server.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output clean."""


@pytest.fixture
def notifier() -> Iterator[Callable[..., Notifier]]:
    """Make notifiers that are closed, and their worker threads gone, after the test."""
    made: list[Notifier] = []

    def make(url: str, **options: Any) -> Notifier:
        made.append(Notifier(url, **options))
        return made[-1]

    yield make
    for each in made:
        each.close(DEADLINE)


@pytest.fixture
def webhook(notifier: Callable[..., Notifier]) -> Iterator[WebhookServer]:
    """A running webhook server.

    It asks for the notifier fixture so as to be torn down before it: a held request is
    released before the notifiers are closed, which would otherwise wait for it.
    """
    server = WebhookServer()
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.01}, name="webhook"
    )
    thread.start()
    yield server
    server.gate.set()  # let a held request finish, so shutdown does not wait on it
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def refusing_url() -> Iterator[str]:
    """A loopback URL whose port is bound but not listening: connections are refused."""
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{bound.getsockname()[1]}/hook"


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` every few milliseconds until it holds, failing after DEADLINE."""
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def events(count: int) -> list[dict[str, Any]]:
    return [{"event": "state", "node": f"node-{n}", "seq": n} for n in range(count)]


def test_events_arrive_in_order_as_json_with_our_headers(
    webhook: WebhookServer, notifier: Callable[..., Notifier]
) -> None:
    sender = notifier(webhook.url)
    sent = events(20)
    assert all(sender.post(event) for event in sent)
    assert sender.close(DEADLINE)
    assert [request.event for request in webhook.received] == sent
    first = webhook.received[0]
    assert first.path == "/hook"
    assert first.headers["Content-Type"] == "application/json"
    assert first.headers["User-Agent"] == f"upgradectl/{__version__}"
    assert sender.last_error is None


def test_values_json_cannot_hold_are_sent_as_text(
    webhook: WebhookServer, notifier: Callable[..., Notifier]
) -> None:
    sender = notifier(webhook.url)
    assert sender.post({"event": "drained", "at": datetime(2024, 11, 10, 2, 30, tzinfo=UTC)})
    assert sender.close(DEADLINE)
    assert webhook.received[0].event["at"] == "2024-11-10 02:30:00+00:00"
    assert sender.post({"event": "late"}) is False  # closed: dropped, not raised


def test_an_event_that_cannot_be_serialised_is_dropped_not_raised(
    notifier: Callable[..., Notifier],
) -> None:
    sender = notifier("http://127.0.0.1:9/hook")
    looped: dict[str, Any] = {"event": "state"}
    looped["self"] = looped
    assert sender.post(looped) is False
    assert "not serialisable" in str(sender.last_error)


def test_a_refused_connection_returns_false_and_never_raises(
    refusing_url: str, notifier: Callable[..., Notifier]
) -> None:
    sender = notifier(refusing_url)
    assert sender.post({"event": "start"})  # queued; nothing has failed yet
    wait_until(lambda: sender.last_error is not None, "the failed delivery")
    assert "Connection refused" in str(sender.last_error)
    assert sender.post({"event": "next"}) is False
    started = time.monotonic()
    assert sender.close(2.0) is False
    assert time.monotonic() - started < 2.0


def test_an_http_error_is_reported_until_a_delivery_succeeds(
    webhook: WebhookServer, notifier: Callable[..., Notifier]
) -> None:
    sender = notifier(webhook.url)
    webhook.status = 500
    sender.post({"event": "start"})
    wait_until(lambda: sender.last_error is not None, "the failed delivery")
    assert "HTTP 500" in str(sender.last_error)
    webhook.status = 200
    assert sender.post({"event": "next"}) is False  # the endpoint was failing a moment ago
    wait_until(lambda: sender.last_error is None, "the next delivery")
    assert sender.post({"event": "last"})
    assert sender.close(DEADLINE) is False  # the first event never got through


def test_a_slow_server_does_not_block_post(
    webhook: WebhookServer, notifier: Callable[..., Notifier]
) -> None:
    sender = notifier(webhook.url, timeout=DEADLINE)
    webhook.gate.clear()
    sent = events(50)
    sender.post(sent[0])
    assert webhook.holding.wait(DEADLINE)
    started = time.monotonic()
    assert all(sender.post(event) for event in sent[1:])
    assert time.monotonic() - started < 0.5
    assert webhook.received == []  # every post returned while the first was still held
    webhook.gate.set()
    assert sender.close(DEADLINE)
    assert [request.event for request in webhook.received] == sent


def test_close_returns_within_its_deadline_when_the_server_hangs(
    webhook: WebhookServer, notifier: Callable[..., Notifier]
) -> None:
    sender = notifier(webhook.url, timeout=DEADLINE)
    webhook.gate.clear()
    sender.post({"event": "summary"})
    assert webhook.holding.wait(DEADLINE)
    started = time.monotonic()
    assert sender.close(0.3) is False
    assert time.monotonic() - started < 1.0


def test_a_full_queue_drops_events_and_says_so(
    webhook: WebhookServer, notifier: Callable[..., Notifier]
) -> None:
    sender = notifier(webhook.url, timeout=DEADLINE, max_pending=2)
    webhook.gate.clear()
    sent = events(4)
    sender.post(sent[0])
    assert webhook.holding.wait(DEADLINE)  # the first is in flight, out of the queue
    assert sender.post(sent[1])
    assert sender.post(sent[2])
    assert sender.post(sent[3]) is False
    assert "dropped" in str(sender.last_error)
    webhook.gate.set()
    assert sender.close(DEADLINE) is False
    assert [request.event for request in webhook.received] == sent[:3]


@pytest.mark.parametrize(
    "url", ["ftp://hooks.example/x", "file:///etc/passwd", "hooks.example/x", "http://", ""]
)
def test_only_http_and_https_urls_are_accepted(url: str) -> None:
    with pytest.raises(ValueError, match=r"^--notify: expected an http:// or https:// URL"):
        Notifier(url)


def test_an_https_url_is_accepted(notifier: Callable[..., Notifier]) -> None:
    assert notifier("https://hooks.example/upgradectl").url == "https://hooks.example/upgradectl"
