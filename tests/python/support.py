"""Helpers shared by the end-to-end tests: starting latchkey, driving the modal client.

The tests run the real `modal` package in-process against the session server (its
`_Client.from_env()` singleton is pointed at that server by conftest.py), and open
explicit clients for any other server. The modal CLI always runs as a subprocess.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets as pysecrets
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
MODAL_CLI = VENV_BIN / "modal"
READY_TIMEOUT = 30.0


def latchkey_bin() -> Path:
    raw = os.environ.get("LATCHKEY_BIN", "target/debug/latchkey")
    path = Path(raw)
    if not path.is_absolute():
        path = REPO_ROOT / path
    return path


def unique(prefix: str = "t") -> str:
    """A fresh object name, valid as a secret and as an environment name."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_dotenv(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        out[key.strip()] = value.strip().strip('"').strip("'")
    return out


def http_get(url: str, timeout: float = 2.0, context: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def scrape_metrics(server: "Server", headers: dict[str, str] | None = None) -> tuple[int, str]:
    """GET /metrics: (status, body)."""
    request = urllib.request.Request(f"{server.url}/metrics", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5, context=server.ssl_context()) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels`, parsed from
    /metrics' text by the Prometheus client's own parser (which rejects malformed text)."""
    from prometheus_client.parser import text_string_to_metric_families

    total, seen = 0.0, False
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
                seen = True
    assert seen, f"no sample {name}{labels} in /metrics:\n{text}"
    return total


def snapshot_dir(path: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under `path`."""
    out = {}
    for p in sorted(path.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(path))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def random_master_key() -> str:
    return base64.b64encode(pysecrets.token_bytes(32)).decode()


@dataclass
class Server:
    """One running `latchkey serve` process."""

    data_dir: Path
    port: int
    args: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen | None = None
    returncode: int | None = None
    # The CA that signed its certificate, when it serves TLS (--tls-cert).
    ca_file: Path | None = None
    _log_file: object = field(default=None, repr=False)

    @property
    def tls(self) -> bool:
        return "--tls-cert" in self.args

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def ssl_context(self) -> ssl.SSLContext | None:
        """What trusts this server's certificate (None without TLS)."""
        if not self.tls:
            return None
        return ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)

    @property
    def admin_token(self) -> dict[str, str]:
        return parse_dotenv((self.data_dir / "admin-token").read_text())

    @property
    def token_id(self) -> str:
        return self.admin_token["LATCHKEY_TOKEN_ID"]

    @property
    def token_secret(self) -> str:
        return self.admin_token["LATCHKEY_TOKEN_SECRET"]

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def command(self) -> list[str]:
        return [
            str(latchkey_bin()),
            "serve",
            "--listen",
            f"127.0.0.1:{self.port}",
            "--data-dir",
            str(self.data_dir),
            *self.args,
        ]

    def start(self, wait: bool = True) -> "Server":
        self._log_file = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )
        self.returncode = None
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"latchkey exited with code {self.proc.returncode} before it was ready.\n"
                    f"command: {' '.join(self.command())}\n--- server output ---\n{self.log()}"
                )
            try:
                status, _ = http_get(f"{self.url}/readyz", timeout=1.0, context=self.ssl_context())
                if status == 200:
                    return
                last = f"HTTP {status}"
            except OSError as exc:
                last = repr(exc)
            time.sleep(0.05)
        raise RuntimeError(f"latchkey not ready after {timeout}s (last: {last})\n--- server output ---\n{self.log()}")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        """Send `sig` and wait; kill if it does not exit in time. Returns the exit code."""
        if self.proc is None:
            return self.returncode
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.returncode = None
                self._close_log()
                raise AssertionError(f"latchkey did not exit within {timeout}s of signal {sig}")
        self.returncode = self.proc.returncode
        self._close_log()
        return self.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close_log()

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


def server_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODAL_", "LATCHKEY_"))}
    env.setdefault("RUST_BACKTRACE", "1")
    env.update(extra or {})
    return env


def client_env(server: Server, home: Path, *, with_token: bool = True) -> dict[str, str]:
    """Environment for a modal CLI/Python subprocess aimed at `server`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
    env.update(
        {
            "HOME": str(home),
            "MODAL_CONFIG_PATH": str(home / ".modal.toml"),
            "MODAL_SERVER_URL": server.url,
            "COLUMNS": "250",
            "LINES": "100",
            "NO_COLOR": "1",
            "TERM": "dumb",
            "PYTHONUNBUFFERED": "1",
            "PYTHONWARNINGS": "ignore",
        }
    )
    if with_token:
        env["MODAL_TOKEN_ID"] = server.token_id
        env["MODAL_TOKEN_SECRET"] = server.token_secret
    return env


@dataclass
class CliResult:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def flat(self) -> str:
        """Output with whitespace runs collapsed (rich wraps and pads)."""
        return re.sub(r"\s+", " ", self.output)

    def __str__(self) -> str:
        return f"$ modal {' '.join(self.args)}\n[exit {self.returncode}]\n--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"


def run_cli(
    server: Server,
    home: Path,
    *args: str,
    env: dict[str, str] | None = None,
    unset: tuple[str, ...] = (),
    with_token: bool = True,
    check: bool | None = True,
    timeout: float = 60.0,
    cwd: Path | None = None,
) -> CliResult:
    """Run the real `modal` CLI. check=True: must exit 0; False: must fail; None: no check."""
    full_env = client_env(server, home, with_token=with_token)
    full_env.update(env or {})
    for key in unset:
        full_env.pop(key, None)
    proc = subprocess.run(
        [str(MODAL_CLI), *args],
        env=full_env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(cwd or home),
    )
    result = CliResult(list(args), proc.returncode, proc.stdout, proc.stderr)
    if check is True:
        assert result.returncode == 0, f"CLI failed:\n{result}"
    elif check is False:
        assert result.returncode != 0, f"CLI unexpectedly succeeded:\n{result}"
    return result


# ----------------------------------------------------------------------------
# In-process modal helpers. Import modal lazily: conftest sets the environment first.


def rpc(method: str, request, client=None, metadata=None):
    """Call one ModalClient RPC through the real client's stub (with its retries and error mapping).

    `client` is a `modal.Client` (default: `Client.from_env()`, i.e. the session server).
    Errors surface as `modal.exception.*`, exactly as the modal library raises them.
    """
    from modal._utils.async_utils import synchronizer
    from modal.client import _Client

    async def _call(c):
        c = c if c is not None else await _Client.from_env()
        return await getattr(c._stub, method)(request)

    return synchronizer.create_blocking(_call, f"rpc_{method}")(client)


def open_client(url: str, token_id: str | None, token_secret: str | None):
    """A `modal.Client` for `url` with the given credentials (None: send no token headers)."""
    from modal._utils.async_utils import synchronizer
    from modal.client import _Client
    from modal_proto import api_pb2

    creds = (token_id, token_secret) if token_id is not None else None

    async def _open():
        c = _Client(url, api_pb2.CLIENT_TYPE_CLIENT, creds)
        await c._open()
        return c

    return synchronizer.create_blocking(_open, "open_client")()


def client_for(server: Server):
    return open_client(server.url, server.token_id, server.token_secret)


def hydrate_in_app(secret, app_id: str, client=None, environment_name: str | None = None):
    """Hydrate a from_dict/from_dotenv Secret the way `app.run()` does: with the app's id in
    the load context, so the client sends OBJECT_CREATION_TYPE_ANONYMOUS_OWNED_BY_APP."""
    from modal._load_context import LoadContext
    from modal._resolver import Resolver
    from modal._utils.async_utils import TaskContext, synchronizer

    async def _load(obj, c):
        resolver = Resolver()
        async with TaskContext() as tc:
            ctx = LoadContext(client=c, app_id=app_id, environment_name=environment_name, task_context=tc)
            await resolver.load(obj, ctx)
        return obj

    return synchronizer.create_blocking(_load, "hydrate_in_app")(secret, client)


def secret_keys(secret_id: str, client=None) -> set[str]:
    from modal_proto import api_pb2

    resp = rpc("SecretGetInfo", api_pb2.SecretGetInfoRequest(secret_id=secret_id), client)
    return set(resp.metadata.keys)


def fake_app_id() -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    return "ap-" + "".join(pysecrets.choice(alphabet) for _ in range(22))


def fake_secret_id() -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    return "st-" + "".join(pysecrets.choice(alphabet) for _ in range(22))


def raw_call(url: str, method: str, request, metadata: dict[str, str] | None = None):
    """One RPC over a bare grpclib channel with exactly the given metadata (no modal client).

    Returns the response, or raises grpclib.GRPCError."""
    import asyncio
    import urllib.parse

    import grpclib.client
    from modal_proto import api_grpc

    parsed = urllib.parse.urlparse(url)

    async def _call():
        channel = grpclib.client.Channel(parsed.hostname, parsed.port)
        try:
            stub = api_grpc.ModalClientStub(channel)
            return await getattr(stub, method)(request, metadata=metadata or {}, timeout=10)
        finally:
            channel.close()

    return asyncio.run(_call())


def api(
    server: Server, method: str, path: str, body: dict | None = None, token: tuple[str, str] | None = None
) -> tuple[int, dict]:
    """Call latchkey's JSON API (`/api/v1` + path) as `token` (id, secret), by default the server's
    admin: (status, JSON answer)."""
    import json

    token_id, token_secret = token or (server.token_id, server.token_secret)
    req = urllib.request.Request(
        f"{server.url}/api/v1{path}",
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={
            "Authorization": f"Bearer {token_id}:{token_secret}",
            "Content-Type": "application/json",
        },
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")
