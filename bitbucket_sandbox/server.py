"""The sandbox's HTTP server: a thin, threaded adapter around :class:`Sandbox`.

Serves on loopback only. ``SandboxServer(...).start()`` runs it in a daemon thread
(tests use port 0 for a free port); ``serve_forever()`` runs it in the foreground
(the ``bitbucket_sandbox`` command). With ``tls=True`` it serves HTTPS with a freshly
generated self-signed certificate, so certificate errors can be exercised.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from bitbucket_sandbox.app import Sandbox
from bitbucket_sandbox.data import World, generate
from bitbucket_sandbox.http import Request

LOOPBACK = {"127.0.0.1", "::1", "localhost"}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a listing client reuses one connection
    server_version = "BitbucketSandbox/1.0"
    sandbox: Sandbox  # set on the subclass made per server

    def setup(self) -> None:
        super().setup()
        # Headers and body go out as separate writes; without NODELAY, Nagle plus the
        # client's delayed ACK add ~40 ms to every small keep-alive response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        request = Request(
            method=self.command,
            path=unquote(parts.path),
            query=parse_qs(parts.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        response = self.sandbox.handle(request)
        if response.drop:
            # A dropped connection: close the socket with no answer at all.
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        try:
            self.send_response(response.status)
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(response.body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away (e.g. it timed out)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _serve

    def log_message(self, format: str, *args) -> None:  # quiet: the sandbox records requests itself
        if getattr(self.server, "verbose", False):
            super().log_message(format, *args)


def _self_signed(host: str) -> tuple[str, str]:
    """A throwaway certificate and key for ``host``, written to a temp folder."""
    # Imported here: only --tls needs cryptography's X.509 machinery (start-up cost).
    from cryptography import x509  # noqa: PLC0415
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415
    from cryptography.x509.oid import NameOID  # noqa: PLC0415

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bitbucket-sandbox.local")])
    now = dt.datetime.now(dt.timezone.utc)
    alt = [x509.DNSName("localhost")]
    try:
        alt.append(x509.IPAddress(ipaddress.ip_address(host)))
    except ValueError:
        alt.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(alt), False)
        .sign(key, hashes.SHA256())
    )
    folder = Path(tempfile.mkdtemp(prefix="bb-sandbox-tls-"))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(cert_path), str(key_path)


class SandboxServer:
    """A Bitbucket Cloud sandbox on ``host:port`` (loopback only; port 0 picks a free one)."""

    def __init__(
        self,
        world: World | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: bool = False,
        verbose: bool = False,
        **sandbox_options,
    ) -> None:
        if host not in LOOPBACK:
            raise ValueError(f"The sandbox serves loopback only, not {host!r}.")
        self.httpd = ThreadingHTTPServer((host, port), BaseHTTPRequestHandler)
        self.httpd.daemon_threads = True
        self.httpd.verbose = verbose
        self.host, self.port, self.tls = host, self.httpd.server_address[1], tls
        scheme = "https" if tls else "http"
        display_host = f"[{host}]" if ":" in host else host
        self.web_url = f"{scheme}://{display_host}:{self.port}"
        self.api_url = f"{self.web_url}/2.0"
        self.sandbox = Sandbox(
            world if world is not None else generate(), api_base=self.api_url, web_base=self.web_url, **sandbox_options
        )
        self.httpd.RequestHandlerClass = type("Handler", (_Handler,), {"sandbox": self.sandbox})
        if tls:
            cert, key = _self_signed(host)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self._thread: threading.Thread | None = None

    def start(self) -> "SandboxServer":
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="bitbucket-sandbox", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.sandbox.warm()
        self.httpd.serve_forever()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> "SandboxServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
