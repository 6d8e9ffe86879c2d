"""Modal sandboxes on a latchkey server started with `--sandboxes`, driven by the real client.

The command of `modal.Sandbox.create(...)` runs as a process on the server host (under
bubblewrap when it works here, else as a plain process: both are tested when both are
available), with exactly the sandbox's secrets in its environment.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import modal
import modal.exception
import pytest
from modal_proto import api_pb2

import support
from support import client_for, unique

# A variable only the server's own environment holds: it must never reach a sandbox.
SERVER_ONLY = "LK_SERVER_ONLY_CANARY"
SERVER_ONLY_VALUE = "server-side-value-7f3a"
BASE_KEYS = {"PATH", "HOME", "LANG", "PWD"}


def _bwrap_works() -> bool:
    bwrap = shutil.which("bwrap")
    if not bwrap:
        return False
    probe = [bwrap, "--unshare-pid", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--", "true"]
    return subprocess.run(probe, capture_output=True).returncode == 0


# Sandboxes always run under bubblewrap: scripts/test installs it, and a
# machine where it does not work fails here with a message rather than skipping.
ISOLATIONS = ["bwrap"]


@pytest.fixture(scope="module", params=ISOLATIONS)
def sandbox_server(request, start_server):
    if request.param == "bwrap" and not _bwrap_works():
        pytest.fail("bubblewrap (bwrap) is missing or unusable here: apt-get install bubblewrap, or run scripts/test")
    return start_server(
        args=["--sandboxes", "--sandbox-isolation", request.param],
        env={SERVER_ONLY: SERVER_ONLY_VALUE},
    )


@pytest.fixture(scope="module")
def isolation(sandbox_server) -> str:
    return sandbox_server.args[sandbox_server.args.index("--sandbox-isolation") + 1]


@pytest.fixture(scope="module")
def sbc(sandbox_server):
    """A modal client for the sandbox server."""
    client = client_for(sandbox_server)
    yield client
    client.close()


@pytest.fixture(scope="module")
def app(sbc):
    return modal.App.lookup(unique("app"), create_if_missing=True, client=sbc)


def create(sbc, app, *args, **kwargs):
    return modal.Sandbox.create(*args, app=app, client=sbc, **kwargs)


def run(sbc, app, *args, **kwargs) -> tuple[str, str, int]:
    """Run a sandbox to its end: (stdout, stderr, returncode)."""
    sb = create(sbc, app, *args, **kwargs)
    out = sb.stdout.read()
    err = sb.stderr.read()
    sb.wait(raise_on_termination=False)
    return out, err, sb.returncode


def env_of(sbc, app, **kwargs) -> dict[str, str]:
    out, err, code = run(sbc, app, "env", **kwargs)
    assert code == 0, err
    return dict(line.split("=", 1) for line in out.splitlines())


def named_secret(sbc, values: dict[str, str]) -> str:
    name = unique("sbx")
    modal.Secret.objects.create(name, values, client=sbc)
    return name


def processes_with(marker: str) -> list[str]:
    """Command lines of this host's processes that contain `marker`."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in text and "pytest" not in text:
            found.append(text)
    return found


def wait_until_gone(marker: str, timeout: float = 5.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while (left := processes_with(marker)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def started_count(server) -> int:
    return server.log().count("sandbox started")


# ----------------------------------------------------------------------------


def test_the_snippet_of_the_issue_prints_secret_values(sandbox_server, tmp_path):
    """Exactly the issue's snippet, in a fresh Python process configured by MODAL_* variables."""
    client = client_for(sandbox_server)
    modal.Secret.objects.create("s", {"FOO": "foo-from-latchkey"}, client=client, allow_existing=True)
    script = tmp_path / "snippet.py"
    script.write_text(
        "import modal\n"
        'sb = modal.Sandbox.create("sh", "-c", "echo $FOO $BAR", '
        'app=modal.App.lookup("x", create_if_missing=True), '
        'secrets=[modal.Secret.from_name("s"), modal.Secret.from_dict({"BAR": "b"})])\n'
        "print(sb.stdout.read(), end='')\n"
        "sb.wait()\n"
        "print('returncode', sb.returncode)\n"
    )
    home = tmp_path / "home"
    home.mkdir()
    env = support.client_env(sandbox_server, home)
    proc = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=90, cwd=str(tmp_path)
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "foo-from-latchkey b\nreturncode 0\n", proc.stdout + proc.stderr

    # A named secret whose values reached a process has its last_used_at set.
    secret = modal.Secret.from_name("s")
    secret.hydrate(client=client)
    assert secret.info().last_used is not None
    client.close()


def test_values_of_named_and_dict_secrets_arrive(sbc, app):
    name = named_secret(sbc, {"NAMED_A": "alpha", "NAMED_SPACE": "with spaces and = signs"})
    env = env_of(
        sbc,
        app,
        secrets=[modal.Secret.from_name(name), modal.Secret.from_dict({"DICT_B": "beta", "DROPPED": None})],
    )
    assert env["NAMED_A"] == "alpha"
    assert env["NAMED_SPACE"] == "with spaces and = signs"
    assert env["DICT_B"] == "beta"
    assert "DROPPED" not in env


def test_a_sandbox_gets_the_current_version_after_updates_and_a_rollback(sandbox_server, sbc, app):
    name = named_secret(sbc, {"TOKEN": "v1-token", "GONE": "v1-only"})
    status, body = support.api(
        sandbox_server, "PATCH", f"/secrets/{name}", {"values": {"TOKEN": "v2-token", "GONE": None}}
    )
    assert status == 200, body
    env = env_of(sbc, app, secrets=[modal.Secret.from_name(name)])
    assert env["TOKEN"] == "v2-token" and "GONE" not in env
    status, body = support.api(sandbox_server, "POST", f"/secrets/{name}/rollback", {"to": 1})
    assert (status, body.get("version")) == (200, 3), body
    env = env_of(sbc, app, secrets=[modal.Secret.from_name(name, required_keys=["GONE"])])
    assert (env["TOKEN"], env["GONE"]) == ("v1-token", "v1-only")
    # Each start read the version it got, as the audit log says (issue 14).
    status, log = support.api(sandbox_server, "GET", f"/audit?secret={name}&action=secret.read")
    assert status == 200, log
    reads = [(e["interface"], e["version"], e["outcome"]) for e in log["items"]]
    assert reads == [("sandbox", 2, "ok"), ("sandbox", 3, "ok")], log


def test_later_secrets_override_earlier_ones_key_by_key(sbc, app):
    middle = named_secret(sbc, {"B": "named", "C": "named"})
    env = env_of(
        sbc,
        app,
        secrets=[
            modal.Secret.from_dict({"A": "first", "B": "first", "C": "first"}),
            modal.Secret.from_name(middle),
            modal.Secret.from_dict({"C": "last"}),
        ],
    )
    assert (env["A"], env["B"], env["C"]) == ("first", "named", "last")
    # `env=` applies after every secret.
    env = env_of(sbc, app, secrets=[modal.Secret.from_name(middle)], env={"B": "from-env"})
    assert (env["B"], env["C"]) == ("from-env", "named")


def test_a_missing_required_key_fails_before_anything_runs(sandbox_server, sbc, app):
    name = named_secret(sbc, {"PRESENT": "1"})
    marker = unique("never-runs")
    before = started_count(sandbox_server)
    with pytest.raises(modal.exception.Error) as info:
        create(
            sbc,
            app,
            "sh",
            "-c",
            f"sleep 30 # {marker}",
            secrets=[modal.Secret.from_name(name, required_keys=["PRESENT", "ABSENT_KEY"])],
        )
    assert "missing key(s): ABSENT_KEY" in str(info.value)
    assert processes_with(marker) == []
    assert started_count(sandbox_server) == before


def test_the_environment_holds_no_server_variable(sandbox_server, sbc, app, isolation):
    assert SERVER_ONLY in sandbox_server.env  # the server itself has it
    env = env_of(sbc, app, secrets=[modal.Secret.from_dict({"ONLY_THIS": "1"})])
    assert SERVER_ONLY not in env
    assert SERVER_ONLY_VALUE not in "".join(env.values())
    assert set(env) == BASE_KEYS | {"ONLY_THIS"}, env
    assert env["LANG"] == "C.UTF-8"
    assert "/usr/bin" in env["PATH"].split(":")


@pytest.mark.parametrize("size", [1_000_000])
def test_stdout_and_stderr_are_complete_for_large_outputs(sbc, app, size):
    # Line-numbered output: a lost, repeated or reordered chunk shows.
    lines = size // 2
    out, err, code = run(
        sbc,
        app,
        "sh",
        "-c",
        f"seq -w 1 {lines} | head -c {size}; seq -w 1 {lines} | sed 's/^/E/' | head -c {size} >&2",
    )
    assert code == 0
    width = len(str(lines))
    want_out = "".join(f"{i:0{width}d}\n" for i in range(1, lines + 1))[:size]
    want_err = "".join(f"E{i:0{width}d}\n" for i in range(1, lines + 1))[:size]
    assert len(out) == size and out == want_out
    assert len(err) == size and err == want_err


def test_output_is_streamed_while_the_process_runs(sbc, app):
    sb = create(sbc, app, "sh", "-c", "echo first; sleep 1; echo second")
    lines = []
    start = time.monotonic()
    for line in sb.stdout:
        lines.append((line, time.monotonic() - start))
    sb.wait()
    assert [line for line, _ in lines] == ["first\n", "second\n"]
    assert lines[1][1] - lines[0][1] > 0.5, lines


@pytest.mark.parametrize("code", [0, 1, 42, 255])
def test_the_exit_code_is_right(sbc, app, code):
    sb = create(sbc, app, "sh", "-c", f"exit {code}")
    sb.wait()
    assert sb.returncode == code
    assert sb.poll() == code


def test_a_process_killed_by_a_signal_reports_128_plus_the_signal(sbc, app):
    _, _, code = run(sbc, app, "sh", "-c", "kill -KILL $$")
    assert code == 137


def test_an_unknown_command_is_an_error_at_create(sbc, app):
    with pytest.raises(modal.exception.InvalidError, match="no-such-command-here"):
        create(sbc, app, "no-such-command-here")


def test_stdin_reaches_the_process(sbc, app):
    sb = create(sbc, app, "sh", "-c", "read a; read b; echo got $a $b; cat")
    sb.stdin.write(b"one\ntwo\n")
    sb.stdin.drain()
    sb.stdin.write(b"rest")
    sb.stdin.write_eof()
    sb.stdin.drain()
    assert sb.stdout.read() == "got one two\nrest"
    sb.wait()
    assert sb.returncode == 0


def test_a_timeout_kills_the_process(sbc, app):
    marker = unique("timeout")
    start = time.monotonic()
    sb = create(sbc, app, "sh", "-c", f"echo started; sleep 600 # {marker}; echo never", timeout=2)
    assert sb.stdout.read() == "started\n"
    with pytest.raises(modal.exception.SandboxTimeoutError):
        sb.wait()
    elapsed = time.monotonic() - start
    assert 1.5 < elapsed < 15, elapsed
    assert sb.returncode == 124
    assert wait_until_gone(marker) == []


def test_terminate_kills_the_process_and_its_children(sbc, app):
    marker = unique("terminate")
    sb = create(sbc, app, "sh", "-c", f"sleep 600 & sleep 600 # {marker}")
    deadline = time.monotonic() + 5
    while not processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_with(marker), "the sandbox did not start"
    sb.terminate()
    sb.wait(raise_on_termination=False)
    assert sb.returncode == 137
    assert wait_until_gone(marker) == []
    with pytest.raises(modal.exception.SandboxTerminatedError):
        sb.wait()


def test_from_id_sees_the_result(sbc, app):
    sb = create(sbc, app, "sh", "-c", "exit 7")
    sb.wait()
    again = modal.Sandbox.from_id(sb.object_id, client=sbc)
    again.wait()
    assert again.returncode == 7


def test_bubblewrap_isolates_the_process(sandbox_server, sbc, app, isolation):
    data_dir = sandbox_server.data_dir
    out, err, code = run(
        sbc,
        app,
        "sh",
        "-c",
        f"echo pid=$$; ls -A {data_dir} | wc -l; cat {data_dir}/master.key; touch /etc/lk-x; echo done",
    )
    assert "pid=" in out and int(re.search(r"pid=(\d+)", out).group(1)) < 10, out  # own PID namespace
    assert "\n0\n" in out, out  # the data dir is hidden
    assert "No such file" in err and "Read-only file system" in err, err
    assert (data_dir / "master.key").read_text().strip() not in out


def _reader_client(server):
    body = json.dumps({"name": unique("reader"), "role": "reader"}).encode()
    req = urllib.request.Request(
        f"{server.url}/api/v1/tokens",
        data=body,
        method="POST",
        headers={
            "Authorization": f"Bearer {server.token_id}:{server.token_secret}",
            "Content-Type": "application/json",
        },
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        created = json.loads(resp.read())
    return support.open_client(server.url, created["token"]["id"], created["secret"])


def test_a_reader_token_may_not_create_sandboxes(sandbox_server, app):
    reader = _reader_client(sandbox_server)
    marker = unique("reader")
    before = started_count(sandbox_server)
    with pytest.raises(modal.exception.PermissionDeniedError, match="may not create sandboxes"):
        modal.Sandbox.create("sh", "-c", f"sleep 30 # {marker}", app=app, client=reader)
    assert started_count(sandbox_server) == before
    assert processes_with(marker) == []
    reader.close()


def test_a_reader_token_may_not_create_apps_but_may_look_them_up(sandbox_server, sbc):
    """Apps exist to hold sandboxes: making one is developer work (a reader could
    fill the server's app table)."""
    reader = _reader_client(sandbox_server)
    with pytest.raises(modal.exception.PermissionDeniedError, match="may not create sandbox apps"):
        modal.App.lookup(unique("reader-app"), create_if_missing=True, client=reader)
    name = unique("shared")
    made = modal.App.lookup(name, create_if_missing=True, client=sbc)
    assert modal.App.lookup(name, client=reader).app_id == made.app_id
    reader.close()


def test_apps_past_the_limit_make_room_without_losing_one_that_holds_a_sandbox(start_server):
    srv = start_server(args=["--sandboxes", "--sandbox-max-apps", "2"])
    client = client_for(srv)
    busy, spare, third = unique("busy"), unique("spare"), unique("third")
    busy_app = modal.App.lookup(busy, create_if_missing=True, client=client)
    marker = unique("held")
    sb = modal.Sandbox.create("sh", "-c", f"sleep 30 # {marker}", app=busy_app, client=client)
    modal.App.lookup(spare, create_if_missing=True, client=client)
    # The limit is reached: the spare app, which holds no sandbox, makes room.
    modal.App.lookup(third, create_if_missing=True, client=client)
    with pytest.raises(modal.exception.NotFoundError):
        modal.App.lookup(spare, client=client)
    # The app holding a sandbox was kept and still serves.
    again = modal.App.lookup(busy, client=client)
    out, _, code = run(client, again, "echo", "still-here")
    assert (out.strip(), code) == ("still-here", 0)
    sb.terminate()
    client.close()


def test_no_process_visible_to_a_sandbox_holds_the_server_environment(sandbox_server, sbc, app):
    """Whatever a sandbox reads of /proc, the server's variables are not there."""
    out, _, _ = run(sbc, app, "sh", "-c", "cat /proc/*/environ /proc/$PPID/environ 2>/dev/null | tr '\\0' '\\n'")
    assert SERVER_ONLY_VALUE not in out
    assert SERVER_ONLY not in out


def test_plain_process_sandboxes_are_refused_saying_why(start_server):
    """A plain process with the server's user could read /proc/$PPID/environ (the master
    key, a database password) and the data dir: that mode is not offered."""
    with pytest.raises(AssertionError) as info:
        start_server(args=["--sandboxes", "--sandbox-isolation", "process"])
    assert "--sandbox-isolation process is not offered" in str(info.value)


@pytest.mark.parametrize(
    "option", [{"idle_timeout": 30}, {"tags": {"team": "x"}}], ids=["idle_timeout", "tags"]
)
def test_options_latchkey_does_not_keep_are_refused_not_dropped(sandbox_server, sbc, app, option):
    marker = unique("opt")
    before = started_count(sandbox_server)
    with pytest.raises(modal.exception.InvalidError, match=f"do not support {next(iter(option))}"):
        modal.Sandbox.create("sh", "-c", f"sleep 30 # {marker}", app=app, client=sbc, **option)
    assert started_count(sandbox_server) == before
    assert processes_with(marker) == []


def test_a_second_running_sandbox_of_one_name_already_exists(sbc, app):
    name = unique("named")
    first = modal.Sandbox.create("sleep", "30", app=app, client=sbc, name=name)
    with pytest.raises(modal.exception.AlreadyExistsError, match="already exists"):
        modal.Sandbox.create("sleep", "30", app=app, client=sbc, name=name)
    first.terminate()


def test_a_gpu_is_refused_saying_so(sbc, app):
    """`gpu=` makes the client use the V1 flow (SandboxCreate): the answer says GPUs are
    not supported rather than naming an RPC."""
    with pytest.raises(modal.exception.Error, match="do not support GPUs"):
        modal.Sandbox.create("true", app=app, client=sbc, gpu="a10g")


def test_sandboxes_are_off_by_default(server):
    """The shared server runs without --sandboxes: the first RPC of the flow says so."""
    client = client_for(server)
    with pytest.raises(modal.exception.UnimplementedError) as info:
        app = modal.App.lookup(unique("app"), create_if_missing=True, client=client)
        modal.Sandbox.create("true", app=app, client=client)
    assert "AppGetOrCreate is not served: sandboxes are disabled on this server; start it with --sandboxes" in str(
        info.value
    )
    client.close()


@pytest.mark.parametrize(
    "method, request_factory",
    [
        ("SandboxCreateV2", lambda: api_pb2.SandboxCreateV2Request(app_id="ap-x")),
        ("SandboxWaitV2", lambda: api_pb2.SandboxWaitRequest(sandbox_id="sb-x")),
        ("AuthTokenGet", lambda: api_pb2.AuthTokenGetRequest()),
        ("ImageGetOrCreate", lambda: api_pb2.ImageGetOrCreateRequest()),
    ],
)
def test_every_sandbox_rpc_says_sandboxes_are_off(server, method, request_factory):
    with pytest.raises(modal.exception.UnimplementedError, match=f"{method} is not served: sandboxes are disabled"):
        support.rpc(method, request_factory())


def test_the_command_router_refuses_requests_without_a_valid_token(sandbox_server, sbc, app):
    """Its only credential is the short-lived token of SandboxCreateV2 / SandboxGetCommandRouterAccess."""
    import asyncio
    import urllib.parse

    import grpclib.client
    from grpclib import GRPCError, Status
    from modal_proto import task_command_router_pb2 as tcr
    from modal_proto.task_command_router_grpc import TaskCommandRouterStub

    sb = create(sbc, app, "sh", "-c", "echo private-output")
    sb.wait()
    task_id = support.rpc("SandboxGetTaskIdV2", api_pb2.SandboxGetTaskIdRequest(sandbox_id=sb.object_id), sbc).task_id
    access = support.rpc(
        "SandboxGetCommandRouterAccess", api_pb2.SandboxGetCommandRouterAccessRequest(sandbox_id=sb.object_id), sbc
    )
    parsed = urllib.parse.urlparse(access.url)
    assert (parsed.hostname, parsed.port) == ("127.0.0.1", sandbox_server.port)

    async def read(metadata):
        channel = grpclib.client.Channel(parsed.hostname, parsed.port)
        try:
            stub = TaskCommandRouterStub(channel)
            req = tcr.SandboxStdioReadV2Request(task_id=task_id, offset=0)
            return await stub.SandboxStdioReadV2(req, metadata=metadata, timeout=10)
        finally:
            channel.close()

    chunks = asyncio.run(read({"authorization": f"Bearer {access.jwt}"}))
    assert b"".join(c.data for c in chunks) == b"private-output\n"
    header, payload, signature = access.jwt.split(".")
    forged = ".".join([header, payload, signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")])
    for metadata in [{}, {"authorization": "Bearer nonsense"}, {"authorization": f"Bearer {forged}"}]:
        with pytest.raises(GRPCError) as info:
            asyncio.run(read(metadata))
        assert info.value.status == Status.UNAUTHENTICATED, metadata


def test_stopping_the_server_kills_running_sandboxes(start_server, tmp_path):
    srv = start_server(args=["--sandboxes"])
    client = client_for(srv)
    marker = unique("shutdown")
    app = modal.App.lookup(unique("app"), create_if_missing=True, client=client)
    modal.Sandbox.create("sh", "-c", f"sleep 600 # {marker}", app=app, client=client)
    deadline = time.monotonic() + 5
    while not processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_with(marker)
    client.close()
    assert srv.stop(timeout=20) == 0
    assert wait_until_gone(marker) == []
    assert "stopping sandboxes" in srv.log()
