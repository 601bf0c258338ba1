"""One TLS trust for both HTTP clients: a token endpoint whose certificate only ``SSL_CERT_FILE`` vouches for
(as behind a TLS-inspecting proxy whose authority only the machine knows) answers a run's aiohttp sender and
an on-demand httpx2 refresh alike.

Before: aiohttp trusted the system store (``SSL_CERT_FILE`` included) and httpx2 its own bundle, so scheduled
refreshes and on-demand ones could disagree about the same server.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from lightkeeper.keeper import Keeper
from lightkeeper.lightspeed import TokenSet
from tests.helpers import make_settings
from tests.integration.test_senders import token_json


def _certificate(
    subject: str,
    issuer_key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture
def https_token_endpoint(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An HTTPS token endpoint on localhost, its certificate signed by a throwaway authority; the URL and the
    authority's PEM file."""
    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lightkeeper test authority")])
    ca = _certificate("lightkeeper test authority", ca_key, ca_name, ca_key, ca=True)
    server = _certificate("localhost", ca_key, ca_name, server_key, ca=False)
    ca_file, cert_file, key_file = tmp_path / "ca.pem", tmp_path / "server.pem", tmp_path / "server.key"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )

    class Token(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            body = token_json("def50200-from-tls")
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Token)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://localhost:{httpd.server_address[1]}", ca_file
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_run_and_an_on_demand_refresh_trust_the_same_authorities(
    https_token_endpoint: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, ca_file = https_token_endpoint
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))  # the machine's trust: only it knows this authority
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    settings = make_settings(f"sqlite:///{tmp_path / 'lk.db'}", url)
    with Keeper(settings) as keeper:
        on_demand = keeper.oauth.refresh("def50200-old")  # httpx2

        async def scheduled() -> TokenSet:
            async with keeper.refresher.sender(1) as sender:  # what a run sends through: aiohttp
                return await keeper.oauth.refresh_with(sender, "def50200-old")

        in_a_run = asyncio.run(scheduled())
        assert keeper.proxy.upstream.tls is keeper.tls  # and the proxy's client, the same context
    assert on_demand.refresh_token == in_a_run.refresh_token == "def50200-from-tls"
