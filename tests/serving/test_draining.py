"""The drain-time answer: connections queued on a listening socket after SIGTERM get a 503 at once.

A real listening socket stands in for the one BentoML's supervisor passes its worker (`--fd`);
real HTTP clients connect to it. The end-to-end check against `bentoml serve` is in
tests/e2e/test_faults.py (test_sigterm_drains_requests_in_flight).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import ssl
import sys
import time

import httpx
import pytest

from visionzoo.serving import draining


@pytest.fixture
def listener():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.setblocking(False)  # as the worker's event loop leaves it
    yield sock
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RD)  # stops listening: a refuser thread on a copy of it ends
    sock.close()


def url(sock: socket.socket, scheme: str = "http") -> str:
    host, port = sock.getsockname()
    return f"{scheme}://{host}:{port}"


def test_the_answer_is_a_complete_503_with_retry_after_and_a_json_error():
    head, body = draining.refusal().split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert lines[0] == "HTTP/1.1 503 Service Unavailable"
    assert headers["Retry-After"] == "1" and headers["Connection"] == "close"
    assert int(headers["Content-Length"]) == len(body)
    assert "shutting down" in json.loads(body)["error"]


def test_queued_connections_are_answered_503_and_the_socket_stays_non_blocking(listener):
    # connected before the refuser starts: waiting in the kernel's queue, as during a drain
    early = socket.create_connection(listener.getsockname())
    early.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert draining.start_refusing(listener.fileno()) is not None
    assert fcntl.fcntl(listener.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK, "the event loop's socket became blocking"
    early.settimeout(5)
    assert early.recv(65536).startswith(b"HTTP/1.1 503 ")
    early.close()

    answer = httpx.get(f"{url(listener)}/readyz", timeout=5)
    assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
    assert "shutting down" in answer.json()["error"]
    # a request with a body is answered too, not reset while it uploads
    posted = httpx.post(f"{url(listener)}/bloodcell/predict", files={"images": ("a.jpg", os.urandom(2 << 20))},
                        timeout=10)
    assert posted.status_code == 503


def test_a_client_that_sends_nothing_is_answered_after_the_read_timeout(listener, monkeypatch):
    monkeypatch.setattr(draining, "READ_SECONDS", 0.2)
    draining.start_refusing(listener.fileno())
    with socket.create_connection(listener.getsockname(), timeout=5) as silent:
        started = time.monotonic()
        assert silent.recv(65536).startswith(b"HTTP/1.1 503 ")
        assert time.monotonic() - started < 4


def test_the_refuser_stops_when_the_socket_stops_listening(listener):
    thread = draining.start_refusing(listener.fileno())
    listener.shutdown(socket.SHUT_RD)  # what the supervisor's close amounts to for this file description
    thread.join(5)
    assert not thread.is_alive()


def test_not_a_socket_starts_nothing(tmp_path):
    with open(tmp_path / "file", "w") as file:
        assert draining.start_refusing(file.fileno()) is None


def test_over_tls_the_answer_is_sent_with_the_workers_certificate(listener, certificate):
    cert, key = certificate
    tls = draining.tls_context(["worker", "--fd", "3", "--ssl-certfile", str(cert), f"--ssl-keyfile={key}"])
    assert isinstance(tls, ssl.SSLContext) and tls.verify_mode == ssl.CERT_NONE  # uvicorn's default
    draining.start_refusing(listener.fileno(), tls)
    answer = httpx.get(f"{url(listener, 'https')}/readyz", verify=ssl.create_default_context(cafile=str(cert)), timeout=5)
    assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
    assert "shutting down" in answer.json()["error"]
    # a client that does not speak TLS is closed, and the refuser goes on answering
    with socket.create_connection(listener.getsockname(), timeout=5) as plain:
        plain.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            reply = plain.recv(65536)
        except ConnectionResetError:
            reply = b""
        assert not reply.startswith(b"HTTP/1.1")
    answer = httpx.get(f"{url(listener, 'https')}/readyz", verify=ssl.create_default_context(cafile=str(cert)), timeout=5)
    assert answer.status_code == 503


def test_plain_http_needs_no_tls_context_and_unusable_tls_options_are_refused():
    assert draining.tls_context(["worker", "--fd", "3"]) is None
    with pytest.raises(OSError):
        draining.tls_context(["worker", "--ssl-certfile", "/nonexistent/cert.pem"])


@pytest.mark.parametrize("worker_args", [None, ["--ssl-certfile", "/nonexistent/cert.pem"]],
                         ids=["not a worker", "unusable TLS options"])
def test_no_signal_handler_changes_outside_a_worker_it_can_answer_for(listener, monkeypatch, worker_args):
    argv = ["pytest"] if worker_args is None else ["worker", "--fd", str(listener.fileno()), *worker_args]
    monkeypatch.setattr(sys, "argv", argv)
    before = signal.getsignal(signal.SIGTERM)
    assert draining.answer_new_connections_while_draining() is False
    assert signal.getsignal(signal.SIGTERM) is before


def test_sigterm_starts_the_refuser_and_still_runs_the_previous_handler(listener, monkeypatch):
    received = []
    originals = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    monkeypatch.setattr(sys, "argv", ["worker", "--fd", str(listener.fileno())])
    try:
        signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))  # uvicorn's, in a worker
        assert draining.answer_new_connections_while_draining() is True
        with pytest.raises(httpx.TimeoutException):  # before the signal: queued, unanswered
            httpx.get(f"{url(listener)}/readyz", timeout=0.5)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)
        assert received == [signal.SIGTERM]
        assert httpx.get(f"{url(listener)}/readyz", timeout=5).status_code == 503
    finally:
        for signum, handler in originals.items():
            signal.signal(signum, handler)
