"""Answer 503 at once to connections that reach a `bentoml serve` worker while it drains.

On SIGTERM (or SIGINT) uvicorn stops accepting on the HTTP socket and waits for the requests in
flight (up to `VISIONZOO_SHUTDOWN_GRACE_SECONDS`). That socket belongs to BentoML's supervisor,
which passed it to the worker with `--fd` and closes it only after the worker has exited; until
then the kernel still completes new connections and queues them. A client that connected during
the drain waited, unanswered, for as long as the drain lasted, and then saw its connection reset.

`answer_new_connections_while_draining()` chains the worker's signal handlers: on the signal, a
thread takes the connections the kernel queues and answers each with 503, `Retry-After` and
`Connection: close` (the JSON error body of every other refusal), so a client or load balancer
learns at once to go elsewhere. Connections already open stay uvicorn's: it finishes them. Once
the worker exits, the supervisor closes the socket and new connections are refused by the kernel.

Where the worker serves HTTPS (`bentoml serve --ssl-certfile ...`), the answer goes over TLS with
the context uvicorn builds from the same `--ssl-*` options (certificate, key, client-certificate
requirement, CA file, ciphers); if that context cannot be built, nothing changes.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import ssl
import sys
import threading
import time

from . import launcher
from .errors import Unavailable, http_headers

logger = logging.getLogger("visionzoo.serving")

MESSAGE = "the server is shutting down; send the request to another replica, or again once this one has restarted"
MAX_REQUEST_HEAD_BYTES = 64 * 1024
READ_SECONDS = 1.0  # how long a refused client may take to send its request head, and to read the answer
MAX_ANSWERING = 64  # connections answered at once; more are closed unanswered
ACCEPT_POLL_SECONDS = 0.5
# the worker's TLS options (BentoML passes them to `_bentoml_impl.worker.service`) -> create_ssl_context's names
TLS_OPTIONS = {"--ssl-certfile": "certfile", "--ssl-keyfile": "keyfile", "--ssl-keyfile-password": "password",
               "--ssl-version": "ssl_version", "--ssl-cert-reqs": "cert_reqs", "--ssl-ca-certs": "ca_certs",
               "--ssl-ciphers": "ciphers"}


def refusal() -> bytes:
    """The whole HTTP/1.1 answer every connection gets while the worker drains."""
    error = Unavailable(MESSAGE)
    body = json.dumps({"error": str(error)}).encode()
    headers = {"Content-Type": "application/json", "Content-Length": str(len(body)),
               **http_headers(error), "Connection": "close"}
    head = f"HTTP/1.1 {error.http_status} Service Unavailable\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return (head + "\r\n").encode("latin-1") + body


def answer_new_connections_while_draining() -> bool:
    """In a `bentoml serve` worker's main thread, once uvicorn has installed its signal handlers:
    on SIGTERM/SIGINT, start answering new connections with 503, then run uvicorn's handler.
    False (and nothing changed) outside such a worker, and where the worker's TLS options do not
    give a usable context (then a plain-text answer would be a protocol error)."""
    fd = launcher.http_socket_fd()
    if fd is None or threading.current_thread() is not threading.main_thread():
        return False
    try:
        tls = tls_context(sys.argv)
    except (OSError, ValueError) as error:  # ssl.SSLError is an OSError
        logger.warning("draining: connections made while draining will wait (TLS context: %s)", error)
        return False
    started = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(signum)

        def handler(signum, frame, previous=previous):
            if not started.is_set():
                started.set()
                start_refusing(fd, tls)
            if callable(previous):
                previous(signum, frame)
            elif previous == signal.SIG_DFL:
                signal.signal(signum, signal.SIG_DFL)
                signal.raise_signal(signum)

        signal.signal(signum, handler)
    return True


def tls_context(argv: list[str]) -> ssl.SSLContext | None:
    """The server-side TLS context uvicorn builds from a worker's `--ssl-*` options, with uvicorn's
    defaults for those not given; None without `--ssl-certfile` (plain HTTP)."""
    given = {key: launcher.worker_option(option, argv) for option, key in TLS_OPTIONS.items()}
    if not given["certfile"]:
        return None
    from uvicorn.config import SSL_PROTOCOL_VERSION, create_ssl_context

    return create_ssl_context(
        certfile=given["certfile"], keyfile=given["keyfile"] or None, password=given["password"] or None,
        ssl_version=int(given["ssl_version"] or SSL_PROTOCOL_VERSION),
        cert_reqs=int(given["cert_reqs"] or ssl.CERT_NONE), ca_certs=given["ca_certs"] or None,
        ciphers=given["ciphers"] or None)


def start_refusing(fd: int, tls: ssl.SSLContext | None = None) -> threading.Thread | None:
    """Answer every connection queued on listening socket `fd` with 503 (over TLS with `tls`), from
    a daemon thread, until the socket is closed or the process exits. None when `fd` is not a socket."""
    try:
        listener = socket.socket(fileno=os.dup(fd))
    except OSError:
        return None
    # a timeout keeps the shared file description non-blocking: the event loop may still accept on it
    listener.settimeout(ACCEPT_POLL_SECONDS)
    thread = threading.Thread(target=_refuse, args=(listener, tls), name="visionzoo-draining", daemon=True)
    thread.start()
    return thread


def _refuse(listener: socket.socket, tls: ssl.SSLContext | None) -> None:
    logger.info("draining: new connections are answered 503 until the worker exits")
    answering = threading.BoundedSemaphore(MAX_ANSWERING)
    answer = refusal()
    with listener:
        while True:
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:  # the socket was closed
                return
            if not answering.acquire(blocking=False):
                connection.close()
                continue
            threading.Thread(target=_answer, args=(connection, answer, answering, tls), daemon=True).start()


def _answer(connection: socket.socket, answer: bytes, answering: threading.BoundedSemaphore,
            tls: ssl.SSLContext | None = None) -> None:
    try:
        connection.settimeout(READ_SECONDS)  # the TLS handshake too
        if tls is not None:
            connection = tls.wrap_socket(connection, server_side=True)
        with connection:
            _read_request_head(connection)
            connection.sendall(answer)
            connection.shutdown(socket.SHUT_WR)
            _read_until_closed(connection)  # closing with unread bytes would reset the answer away
    except OSError:  # the client went away, or its TLS handshake failed (ssl.SSLError)
        connection.close()
    finally:
        answering.release()


def _read_request_head(connection: socket.socket) -> None:
    """Read until the end of the request head; a client that sends nothing is answered anyway."""
    head = b""
    try:
        while b"\r\n\r\n" not in head and len(head) < MAX_REQUEST_HEAD_BYTES:
            chunk = connection.recv(4096)
            if not chunk:
                return
            head += chunk
    except TimeoutError:
        return


def _read_until_closed(connection: socket.socket) -> None:
    """Discard what the client still sends (a request body) until it closes, for READ_SECONDS at most."""
    deadline = time.monotonic() + READ_SECONDS
    try:
        while time.monotonic() < deadline and connection.recv(65536):
            pass
    except TimeoutError:
        return
