"""`latchkey serve --tls-cert --tls-key`: the unmodified Modal client (secrets and a
sandbox) over https,
HSTS on the dashboard, and a certificate reload (SIGHUP) under load.

Certificates come from a test CA made with the openssl CLI. The Modal client
(grpclib) trusts `certifi.where()`: the test puts a copy of the venv's certifi
package, whose bundle has the test CA appended, first on the client's
PYTHONPATH, as a user with a private CA adds it to the bundle.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import certifi
import pytest

import support


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


class Ca:
    """A CA (EC P-256) and the server certificates it issues, in `dir`."""

    def __init__(self, dir: Path):
        self.dir = dir
        dir.mkdir(parents=True, exist_ok=True)
        openssl(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=latchkey test CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            cwd=dir,
        )  # fmt: skip
        (dir / "san.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")

    @property
    def cert(self) -> Path:
        return self.dir / "ca.pem"

    def issue(self, name: str) -> tuple[Path, Path]:
        openssl(
            "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}",
            cwd=self.dir,
        )  # fmt: skip
        openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "san.cnf", "-out", f"{name}.pem",
            cwd=self.dir,
        )  # fmt: skip
        return self.dir / f"{name}.pem", self.dir / f"{name}.key"


def der(pem_path: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem_path.read_text())


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> Ca:
    return Ca(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def certifi_with_ca(ca, tmp_path_factory) -> Path:
    """A directory to put first on PYTHONPATH: certifi whose bundle also holds the test CA."""
    root = tmp_path_factory.mktemp("certifi")
    package = Path(certifi.__file__).parent
    shutil.copytree(package, root / "certifi")
    with open(root / "certifi" / "cacert.pem", "a") as bundle:
        bundle.write("\n" + ca.cert.read_text())
    return root


def tls_server(start_server, ca: Ca, cert: Path, key: Path, *args: str) -> support.Server:
    return start_server(args=["--tls-cert", str(cert), "--tls-key", str(key), *args], ca_file=ca.cert)


def test_modal_client_and_cli_over_https(start_server, ca, certifi_with_ca, tmp_path):
    cert, key = ca.issue("modal")
    server = tls_server(start_server, ca, cert, key, "--sandboxes")
    assert server.url.startswith("https://")
    home = tmp_path / "home"
    home.mkdir()
    trusted = {"PYTHONPATH": str(certifi_with_ca)}
    name = support.unique("tls")

    support.run_cli(server, home, "secret", "create", name, "API_KEY=abc123", env=trusted)
    listed = support.run_cli(server, home, "secret", "list", "--json", env=trusted)
    assert name in [s["name"] for s in json.loads(listed.stdout)], listed

    script = (
        "import modal\n"
        f"s = modal.Secret.from_name({name!r}, required_keys=['API_KEY'])\n"
        "s.hydrate()\n"
        "print(s.info().name)\n"
        "d = modal.Secret.from_dict({'K': 'v'})\n"
        "d.hydrate()\n"
        "print(d.object_id)\n"
        # A sandbox: its stdio goes through the command router, at the https origin.
        "app = modal.App.lookup('tls-app', create_if_missing=True)\n"
        "sb = modal.Sandbox.create('sh', '-c', 'echo $API_KEY', app=app, secrets=[s])\n"
        "print(sb.stdout.read().strip())\n"
        "sb.wait()\n"
        "print(sb.returncode)\n"
    )
    env = support.client_env(server, home)
    env.update(trusted)
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split()
    assert lines[0] == name and lines[1].startswith("st-"), out.stdout
    assert lines[2:] == ["abc123", "0"], out.stdout


def test_hsts_and_secure_cookies_on_the_dashboard_over_tls_only(start_server, server, ca):
    cert, key = ca.issue("hsts")
    tls = tls_server(start_server, ca, cert, key)
    with urllib.request.urlopen(f"{tls.url}/", timeout=5, context=tls.ssl_context()) as resp:
        assert resp.status == 200
        assert resp.headers["Strict-Transport-Security"] == "max-age=31536000"
    # Signing in over TLS gives a Secure session cookie.
    form = urllib.parse.urlencode({"token_id": tls.token_id, "token_secret": tls.token_secret}).encode()
    conn = http.client.HTTPSConnection("127.0.0.1", tls.port, context=tls.ssl_context(), timeout=5)
    conn.request("POST", "/signin", body=form, headers={"Content-Type": "application/x-www-form-urlencoded"})
    signed_in = conn.getresponse()
    assert signed_in.status == 303, signed_in.read()
    cookie = signed_in.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "; Secure" in cookie, cookie
    conn.close()
    with urllib.request.urlopen(f"{server.url}/", timeout=5) as resp:
        assert resp.status == 200
        assert resp.headers["Strict-Transport-Security"] is None


def served_cert(server: support.Server) -> bytes:
    """The certificate a new connection to `server` is shown."""
    with server.ssl_context().wrap_socket(
        socket.create_connection(("127.0.0.1", server.port), timeout=5),
        server_hostname="127.0.0.1",
    ) as sock:
        return sock.getpeercert(binary_form=True)


def test_sighup_reloads_the_certificate_under_load(start_server, ca, tmp_path):
    first_cert, first_key = ca.issue("first")
    second_cert, second_key = ca.issue("second")
    live_cert, live_key = tmp_path / "live.pem", tmp_path / "live.key"
    shutil.copy(first_cert, live_cert)
    shutil.copy(first_key, live_key)
    server = tls_server(start_server, ca, live_cert, live_key)
    assert served_cert(server) == der(first_cert)
    auth = {"Authorization": f"Bearer {server.token_id}:{server.token_secret}"}

    # A kept-alive connection opened before the reload.
    kept = http.client.HTTPSConnection("127.0.0.1", server.port, context=server.ssl_context(), timeout=5)
    kept.request("GET", "/api/v1/whoami", headers=auth)
    assert kept.getresponse().read() and kept.sock is not None
    kept_socket = kept.sock

    # Load: new connections (a handshake each) from four threads until told to stop.
    stop = threading.Event()
    ok, failures = [0], []
    lock = threading.Lock()

    def load():
        context = server.ssl_context()
        while not stop.is_set():
            request = urllib.request.Request(f"{server.url}/api/v1/whoami", headers=auth)
            try:
                with urllib.request.urlopen(request, timeout=5, context=context) as resp:
                    assert resp.status == 200
                    resp.read()
                with lock:
                    ok[0] += 1
            except Exception as exc:  # every failure is a test failure
                with lock:
                    failures.append(repr(exc))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.4)
        before = ok[0]
        # Replace the files as an operator's renewal would, then ask for a reload.
        for src, dst in ((second_cert, live_cert), (second_key, live_key)):
            shutil.copy(src, dst.with_suffix(".tmp"))
            os.replace(dst.with_suffix(".tmp"), dst)
        server.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while served_cert(server) != der(second_cert):
            assert time.monotonic() < deadline, "the new certificate was not served after SIGHUP"
            time.sleep(0.05)
        time.sleep(0.4)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not failures, failures[:5]
    assert before > 0 and ok[0] > before, (before, ok[0])
    assert server.running()
    assert "reloaded the TLS certificate" in server.log()

    # The connection from before the reload was not dropped.
    kept.request("GET", "/api/v1/whoami", headers=auth)
    assert kept.getresponse().status == 200 and kept.sock is kept_socket
    kept.close()

    # A reload that fails keeps the certificate in use and says why.
    live_cert.write_text("not a certificate\n")
    server.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while "cannot reload the TLS certificate" not in server.log():
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.05)
    assert "no certificate in it" in server.log()
    assert served_cert(server) == der(second_cert)
    assert server.running()
