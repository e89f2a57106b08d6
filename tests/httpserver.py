"""A real HTTP(S) server on 127.0.0.1 for the outbound-request tests; it never listens
anywhere else, and every endless handler stops when its client goes or the server stops.

    with LocalServer() as server:        # LocalServer(tls=server_context) for https
        server.port; server.requests     # what it received: [{"method", "path", "headers"}]

    /echo                      200 JSON {"method", "path", "headers", "body"}
    /status/NNN                NNN, body "status NNN"
    /flaky/KEY?fail=N&status=S S for the first N requests naming KEY, then 200 "ok"
    /redirect?to=URL&code=C    C (302) with Location: URL
    /stream-forever            200, chunked, 1 KB every 20 ms, never ends
    /big                       200, Content-Length 100 MB, sent in full if read
    /big-unsized               the same without Content-Length (ends with the connection)
    /gzip-bomb                 200, Content-Encoding gzip: 10 MB of zeros in ~10 KB
    /binary                    200, application/octet-stream, bytes that are not UTF-8
    /latin1                    200, text/plain; charset=latin-1, "café"
    /never-answer              reads the request, then answers nothing until the server stops
"""

from __future__ import annotations

import datetime
import gzip
import json
import ssl
import tempfile
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

BIG_BYTES = 100 * 1024 * 1024
ROUTES = frozenset(("echo", "status", "flaky", "redirect", "stream-forever", "big",
                    "big-unsized", "gzip-bomb", "binary", "latin1", "never-answer"))
_CHUNK = b"x" * 65536
_BOMB = gzip.compress(b"\0" * (10 * 1024 * 1024))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    stopping: threading.Event
    requests: list[dict[str, Any]]
    flaky: Counter[str]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else delayed ACKs add ~40 ms to each keep-alive answer
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.requests.append({"method": self.command, "path": self.path,
                                     "headers": dict(self.headers.items())})
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        parts = url.path.strip("/").split("/")
        if parts[0] not in ROUTES:
            return self._send(404, b"no such path")
        getattr(self, "_" + parts[0].replace("-", "_"))(parts[1:], query, body)

    def _send(self, status: int, body: bytes, content_type: str = "text/plain",
              **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def _echo(self, parts: list[str], query: dict[str, str], body: bytes) -> None:
        self._send(200, json.dumps({
            "method": self.command, "path": self.path, "headers": dict(self.headers.items()),
            "body": body.decode("utf-8", "replace")}).encode(), "application/json")

    def _status(self, parts: list[str], query: dict[str, str], body: bytes) -> None:
        self._send(int(parts[0]), f"status {parts[0]}".encode())

    def _flaky(self, parts: list[str], query: dict[str, str], body: bytes) -> None:
        self.server.flaky[parts[0]] += 1
        if self.server.flaky[parts[0]] <= int(query.get("fail", "1")):
            self._send(int(query.get("status", "500")), b"try again")
        else:
            self._send(200, b"ok")

    def _redirect(self, parts: list[str], query: dict[str, str], body: bytes) -> None:
        self._send(int(query.get("code", "302")), b"", Location=query["to"])

    def _stream_forever(self, parts: list[str], query: dict[str, str], body: bytes) -> None:
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        chunk = b"400\r\n" + b"y" * 1024 + b"\r\n"
        self._write_until_gone(lambda: chunk, delay=0.02)

    def _big(self, parts: list[str], query: dict[str, str], body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(BIG_BYTES))
        self.end_headers()
        self._write_until_gone(lambda: _CHUNK, total=BIG_BYTES)

    def _big_unsized(self, parts: list[str], query: dict[str, str], body: bytes) -> None:
        self.send_response(200)
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        self._write_until_gone(lambda: _CHUNK, total=BIG_BYTES)

    def _gzip_bomb(self, parts: list[str], query: dict[str, str], body: bytes) -> None:
        self._send(200, _BOMB, "application/octet-stream", Content_Encoding="gzip")

    def _binary(self, parts: list[str], query: dict[str, str], body: bytes) -> None:
        self._send(200, bytes(range(256)), "application/octet-stream")

    def _latin1(self, parts: list[str], query: dict[str, str], body: bytes) -> None:
        self._send(200, "café".encode("latin-1"), "text/plain; charset=latin-1")

    def _never_answer(self, parts: list[str], query: dict[str, str], body: bytes) -> None:
        self.server.stopping.wait(30)
        self.close_connection = True

    def _write_until_gone(self, chunk: Any, total: int | None = None,
                          delay: float = 0.0) -> None:
        sent = 0
        try:
            while not self.server.stopping.is_set() and (total is None or sent < total):
                data = chunk()
                self.wfile.write(data)
                sent += len(data)
                if delay:
                    self.server.stopping.wait(delay)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            pass
        self.close_connection = True


class LocalServer:
    """Serves the paths above on 127.0.0.1 (port chosen by the kernel) in a thread."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.stopping = threading.Event()
        self._server.requests = []
        self._server.flaky = Counter()
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True,
                                                  do_handshake_on_connect=False)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True, name="test-httpserver")

    @property
    def requests(self) -> list[dict[str, Any]]:
        return self._server.requests

    def __enter__(self) -> LocalServer:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._server.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def make_tls(hostname: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a certificate for `hostname` signed by a fresh test CA, and a
    client context that trusts only that CA. Needs the `cryptography` package."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def cert(subject: str, key: Any, issuer: str, issuer_key: Any, ca: bool) -> Any:
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(days=1))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), True))
        if ca:
            builder = builder.add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False), True)
        else:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(hostname)]), False)
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(
        ec.SECP256R1())
    ca = cert("handlerbox test CA", ca_key, "handlerbox test CA", ca_key, True)
    leaf = cert(hostname, leaf_key, "handlerbox test CA", ca_key, False)
    pem = serialization.Encoding.PEM
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.NamedTemporaryFile("wb", suffix=".pem") as f:
        f.write(leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
        f.write(leaf.public_bytes(pem))
        f.flush()
        server.load_cert_chain(f.name)
    client = ssl.create_default_context(cadata=ca.public_bytes(pem).decode())
    return server, client
