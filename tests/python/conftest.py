"""Fixtures for the end-to-end suite: the real latchkey binary, the real modal client.

One session server serves most tests (unique names per test keep them apart);
`start_server` starts extra ones on fresh or given data dirs. Every server's
output goes to a log file; when a test fails, what the servers printed during
that test is attached to the report. All servers are killed at the end.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from pathlib import Path

import pytest

# modal reads MODAL_CONFIG_PATH when it is imported: point it at a file of ours
# before any test imports modal, and drop any MODAL_* settings of the caller.
for _key in [k for k in os.environ if k.startswith("MODAL_")]:
    del os.environ[_key]
_TMP_ROOT = Path(tempfile.mkdtemp(prefix="latchkey-e2e-"))
os.environ["MODAL_CONFIG_PATH"] = str(_TMP_ROOT / "in-process-modal.toml")
os.environ.setdefault("PYTHONWARNINGS", "ignore")

import support  # noqa: E402
from support import Server, free_port, latchkey_bin, server_env  # noqa: E402

_SERVERS: list[Server] = []
_LOG_KEY = pytest.StashKey[dict]()


def _require_binary() -> Path:
    path = latchkey_bin()
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(
            f"latchkey binary not found at {path}. Run `cargo build` in {support.REPO_ROOT} first "
            "(or set LATCHKEY_BIN to the binary).",
            pytrace=False,
        )
    return path


class ServerFactory:
    def __init__(self, root: Path):
        self.root = root
        self.count = 0

    def new_data_dir(self) -> Path:
        self.count += 1
        path = self.root / f"data-{self.count}"
        path.mkdir()
        return path

    def __call__(
        self,
        data_dir: Path | None = None,
        args: tuple[str, ...] | list[str] = (),
        env: dict[str, str] | None = None,
        port: int | None = None,
        wait: bool = True,
        ca_file: Path | None = None,
    ) -> Server:
        """Start `latchkey serve` (fresh data dir unless given) and wait for /readyz."""
        _require_binary()
        data_dir = data_dir or self.new_data_dir()
        attempts = 1 if port is not None else 3
        last_exc = None
        for _ in range(attempts):
            self.count += 1
            server = Server(
                data_dir=data_dir,
                port=port or free_port(),
                args=list(args),
                env=server_env(env),
                log_path=self.root / f"server-{self.count}.log",
                ca_file=ca_file,
            )
            _SERVERS.append(server)
            try:
                return server.start(wait=wait)
            except RuntimeError as exc:  # e.g. the free port was taken meanwhile
                server.kill()
                last_exc = exc
                if "address" not in server.log().lower():
                    break
        raise AssertionError(str(last_exc))


@pytest.fixture(scope="session")
def start_server():
    factory = ServerFactory(_TMP_ROOT)
    yield factory
    for server in _SERVERS:
        server.kill()


@pytest.fixture(scope="session")
def server(start_server) -> Server:
    """The shared server. The in-process modal client (`Client.from_env()`) talks to it.

    Every test reaches it from 127.0.0.1, and test_auth fails to authenticate
    on purpose once per RPC: with the default limit of 20 failures a minute
    per address, the tests after it would be refused. Throttling is tested
    on servers of its own (crates/cli/tests/integration/throttle.rs)."""
    srv = start_server(args=["--auth-failure-limit", "0"])
    os.environ["MODAL_SERVER_URL"] = srv.url
    os.environ["MODAL_TOKEN_ID"] = srv.token_id
    os.environ["MODAL_TOKEN_SECRET"] = srv.token_secret
    return srv


@pytest.fixture
def home(tmp_path) -> Path:
    """A HOME (with its own .modal.toml path) for CLI runs."""
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def cli(server, home):
    """Run the modal CLI against the shared server: cli("secret", "list", check=True)."""

    def run(*args, **kwargs):
        return support.run_cli(server, home, *args, **kwargs)

    return run


@pytest.fixture
def env_name(server) -> str:
    """A fresh, empty environment on the shared server (isolates listing tests)."""
    import modal

    name = support.unique("env")
    modal.Environment.objects.create(name)
    return name


# ----------------------------------------------------------------------------
# Show what the servers printed during a failed test.


@pytest.fixture(autouse=True)
def _server_log_marks(request):
    request.node.stash[_LOG_KEY] = {id(s): len(s.log()) for s in _SERVERS}
    yield


TEST_TIMEOUT = int(os.environ.get("LATCHKEY_E2E_TEST_TIMEOUT", "120"))


@pytest.fixture(autouse=True)
def _test_timeout():
    """Fail a test that hangs (e.g. an RPC the server never answers) instead of hanging CI."""

    def on_alarm(signum, frame):
        raise TimeoutError(f"test took longer than {TEST_TIMEOUT}s (LATCHKEY_E2E_TEST_TIMEOUT)")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(TEST_TIMEOUT)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed and call.when in ("setup", "call"):
        marks = item.stash.get(_LOG_KEY, {})
        for server in _SERVERS:
            text = server.log()[marks.get(id(server), 0) :]
            if not text.strip():
                continue
            if len(text) > 20000:
                text = "...\n" + text[-20000:]
            report.sections.append((f"latchkey {server.url} ({server.data_dir.name}) output", text))
    return report


def pytest_sessionfinish(session, exitstatus):
    for server in _SERVERS:
        server.kill()
    if exitstatus == 0:
        shutil.rmtree(_TMP_ROOT, ignore_errors=True)
    else:
        print(f"\nlatchkey e2e: server logs and data dirs kept in {_TMP_ROOT}")
