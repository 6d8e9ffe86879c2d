"""Modal functions on a latchkey server started with `--functions` (issue 12), driven by the
real client and CLI: `modal run` and `modal deploy` of functions with secrets.

A function runs in a container: the server's interpreter running Modal's own container
runtime under bubblewrap, with exactly the function's secrets in its environment. Apps
files are written to a temporary directory and run with the CLI, or imported and run
in-process (`app.run()`), which is faster and shows the caller's exceptions directly.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import modal
import modal.exception
import pytest
from modal_proto import api_pb2

import support
from support import client_for, unique

# A variable only the server's own environment holds: it must never reach a function.
SERVER_ONLY = "LK_FN_SERVER_ONLY_CANARY"
SERVER_ONLY_VALUE = "server-side-value-91c2"
PYTHON = os.environ.get("LATCHKEY_TEST_PYTHON", sys.executable)


@pytest.fixture(scope="module")
def fn_server(start_server):
    return start_server(
        args=["--functions", "--function-python", PYTHON, "--function-idle-timeout", "10s"],
        env={SERVER_ONLY: SERVER_ONLY_VALUE},
    )


@pytest.fixture(scope="module")
def fc(fn_server):
    client = client_for(fn_server)
    yield client
    client.close()


@pytest.fixture(scope="module")
def apps_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("apps")
    sys.path.insert(0, str(path))
    yield path
    sys.path.remove(str(path))


def write_app(directory: Path, source: str, stem: str | None = None) -> Path:
    stem = stem or unique("fnapp").replace("-", "_")
    path = directory / f"{stem}.py"
    path.write_text(textwrap.dedent(source))
    return path


def load_app(directory: Path, source: str):
    """Write an app file and import it (its functions then run from that file)."""
    path = write_app(directory, source)
    return importlib.import_module(path.stem)


def cli(server, home, *args, **kwargs):
    return support.run_cli(server, home, *args, **kwargs)


def containers() -> list[str]:
    """Command lines of running function containers (of any server of this run)."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "modal._container_entrypoint" in cmd and "bwrap" not in cmd:
            out.append(cmd)
    return out


def wait_no_containers(timeout: float = 15.0) -> None:
    deadline = time.time() + timeout
    while containers() and time.time() < deadline:
        time.sleep(0.2)
    assert containers() == [], containers()


def named_secret(client, values: dict[str, str]) -> str:
    name = unique("fs")
    modal.Secret.objects.create(name, values, client=client)
    return name


def _token(server, role: str, environments: list[str] | None = None):
    body = json.dumps({"name": unique(role), "role": role, "environments": environments}).encode()
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
    return created["token"]["id"], created["secret"]


# ---------------------------------------------------------------------------
# The seed's example with `modal run`.

SEED_APP = """
import os
import modal

app = modal.App("{app_name}")

@app.function(secrets=[modal.Secret.from_name("{secret}", required_keys=["MY_PASSWORD"])])
def some_function(x):
    secret_key = os.environ["MY_PASSWORD"]
    print("container says hello", x)
    return secret_key + ":" + str(x * 2)

@app.local_entrypoint()
def main():
    print("remote ->", some_function.remote(21))
    results = list(some_function.map(range(100)))
    assert results == ["{value}:" + str(i * 2) for i in range(100)], results
    print("map ->", len(results), "results in order")
"""


def test_modal_run_of_the_seed_example(fn_server, fc, apps_dir, home):
    secret = named_secret(fc, {"MY_PASSWORD": "hunter2-seed"})
    app_name = unique("seed")
    path = write_app(apps_dir, SEED_APP.format(app_name=app_name, secret=secret, value="hunter2-seed"))
    result = cli(fn_server, home, "run", str(path), timeout=90)
    out = result.flat()
    assert "remote -> hunter2-seed:42" in out, result
    assert "map -> 100 results in order" in out, result
    # Container output streams to the terminal; the image warning is printed.
    assert "container says hello 21" in out, result
    assert "latchkey does not build images" in out, result
    assert "App completed" in out, result
    # The app stopped with its client: no container is left.
    wait_no_containers()
    apps = cli(fn_server, home, "app", "list", "--json").stdout
    [listed] = [a for a in json.loads(apps) if a["description"] == app_name]
    assert listed["state"] == "stopped", listed
    # Containers were reused: 101 inputs took at most two (two per function at most).
    started = [
        line
        for line in fn_server.log().splitlines()
        if "container started" in line and f"app={listed['app_id']}" in line
    ]
    assert 1 <= len(started) <= 2, started
    # The secret's values reached a process: last used, read in the audit log.
    assert modal.Secret.from_name(secret, client=fc).info().last_used is not None
    status, log = support.api(fn_server, "GET", f"/audit?secret={secret}&action=secret.read")
    assert status == 200 and log["items"], log


IDLE_APP = """
import modal

app = modal.App()

@app.function(scaledown_window=2)
def f(x):
    return x + 1
"""


def test_a_container_stops_when_idle_while_its_app_runs(fc, apps_dir):
    mod = load_app(apps_dir, IDLE_APP)
    with mod.app.run(client=fc):
        assert mod.f.remote(1) == 2
        assert containers(), "the container stays warm for the next input"
        wait_no_containers(timeout=15)
        # A new input starts a new container.
        assert mod.f.remote(2) == 3
    wait_no_containers()


ENV_APP = """
import os
import modal

app = modal.App()

@app.function(secrets={secrets})
def env():
    return dict(os.environ)

@app.function()
def probe(paths):
    out = {{}}
    for p in paths:
        try:
            if os.path.isdir(p):
                out[p] = "dir:" + ",".join(sorted(os.listdir(p)))
            else:
                with open(p, "rb") as f:
                    out[p] = "read:" + str(len(f.read()))
        except OSError as e:
            out[p] = "error:" + type(e).__name__
    try:
        open(os.path.join(os.getcwd(), "written"), "w").write("x")
        out["write"] = "ok"
    except OSError as e:
        out["write"] = "error:" + type(e).__name__
    return out
"""


def test_secrets_merge_in_order_and_nothing_of_the_server_reaches_the_function(
    fn_server, fc, apps_dir, tmp_path
):
    named = named_secret(fc, {"B": "named", "C": "named", "MY_PASSWORD": "pw"})
    dotenv = tmp_path / "vals.env"
    dotenv.write_text("D=from-dotenv\nC=dotenv\n")
    secrets = (
        '[modal.Secret.from_dict({"A": "first", "B": "first", "C": "first"}), '
        f'modal.Secret.from_name("{named}", required_keys=["MY_PASSWORD"]), '
        f'modal.Secret.from_dotenv(filename="{dotenv}")]'
    )
    mod = load_app(apps_dir, ENV_APP.format(secrets=secrets))
    data_dir = fn_server.data_dir
    with mod.app.run(client=fc):
        env = mod.env.remote()
        seen = mod.probe.remote([str(data_dir), str(data_dir / "master.key"), str(data_dir / "admin-token")])
    assert (env["A"], env["B"], env["C"], env["D"]) == ("first", "named", "dotenv", "from-dotenv")
    assert env["MY_PASSWORD"] == "pw"
    # Exactly the secrets over a minimal base and the runtime's own variables.
    extra = set(env) - {"A", "B", "C", "D", "MY_PASSWORD"}
    allowed = {"PATH", "LANG", "HOME", "PWD", "LC_CTYPE"}
    assert {k for k in extra if not k.startswith("MODAL_")} <= allowed, sorted(extra)
    assert SERVER_ONLY not in env and SERVER_ONLY_VALUE not in json.dumps(env)
    assert not any(k.startswith("LATCHKEY") or "TOKEN" in k for k in env), sorted(env)
    assert fn_server.token_secret not in json.dumps(env)
    # The data dir is hidden (empty), its files unreadable; the files are read-only.
    key = (data_dir / "master.key").read_text().strip()
    assert key not in json.dumps(seen)
    assert seen[str(data_dir)] in ("dir:", "error:FileNotFoundError"), seen
    assert seen[str(data_dir / "master.key")].startswith("error:"), seen
    assert seen["write"].startswith("error:"), seen


# ---------------------------------------------------------------------------
# Deploy, call from another process, redeploy, list, stop.

DEPLOY_APP = """
import modal

app = modal.App("{name}")

@app.function(secrets=[modal.Secret.from_dict({{"VERSION": "{version}"}})])
def f(x):
    import os
    return os.environ["VERSION"] + ":" + str(x)
"""

CALLER = """
import sys, modal
f = modal.Function.from_name(sys.argv[1], "f")
print("result=" + f.remote(int(sys.argv[2])))
"""


def call_deployed(server, home, name: str, x: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PYTHON, "-c", CALLER, name, str(x)],
        env=support.client_env(server, home),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_deploy_then_call_from_another_process_redeploy_list_and_stop(fn_server, apps_dir, home):
    name = unique("deployed")
    stem = unique("dep").replace("-", "_")
    path = write_app(apps_dir, DEPLOY_APP.format(name=name, version="v1"), stem)
    cli(fn_server, home, "deploy", str(path), timeout=60)
    called = call_deployed(fn_server, home, name, 5)
    assert "result=v1:5" in called.stdout, called
    # Redeploying replaces the function: new calls run the new code.
    write_app(apps_dir, DEPLOY_APP.format(name=name, version="v2"), stem)
    cli(fn_server, home, "deploy", str(path), timeout=60)
    called = call_deployed(fn_server, home, name, 6)
    assert "result=v2:6" in called.stdout, called
    listed = json.loads(cli(fn_server, home, "app", "list", "--json").stdout)
    [row] = [a for a in listed if a["description"] == name]
    assert row["state"] == "deployed", row
    cli(fn_server, home, "app", "stop", name, "--yes", timeout=30)
    called = call_deployed(fn_server, home, name, 7)
    assert called.returncode != 0 and "not found" in called.stderr, called
    wait_no_containers()


def test_an_expired_anonymous_secret_of_a_deployment_is_explained(start_server, apps_dir, home):
    """Known limit: a from_dict secret of a deployed app lives for --anonymous-ttl; past it
    the call says so, rather than naming an unknown secret id."""
    server = start_server(
        args=[
            "--functions", "--function-python", PYTHON,
            "--anonymous-ttl", "1s", "--sweep-interval", "1s",
        ]
    )
    name = unique("expiring")
    path = write_app(apps_dir, DEPLOY_APP.format(name=name, version="v1"))
    cli(server, home, "deploy", str(path), timeout=60)
    time.sleep(2.5)
    called = call_deployed(server, home, name, 1)
    assert called.returncode != 0, called
    assert "deploy the app again" in called.stderr, called
    wait_no_containers()


# ---------------------------------------------------------------------------
# What goes wrong comes back to the caller.

FAILING_APP = """
import os, time
import modal

app = modal.App()

@app.function()
def raises(x):
    raise ValueError(f"bad input {x}")

@app.function()
def unpicklable():
    import threading
    return threading.Lock()

@app.function()
def exits():
    os._exit(3)

@app.function()
def echo(x):
    return x

@app.function(timeout=2)
def slow():
    time.sleep(30)
"""


@pytest.fixture(scope="module")
def failing(fn_server, apps_dir):
    return load_app(apps_dir, FAILING_APP)


def test_a_function_s_exception_reaches_the_caller(fc, failing):
    with failing.app.run(client=fc):
        with pytest.raises(ValueError, match="bad input 3"):
            failing.raises.remote(3)
        results = list(failing.raises.map([1, 2], return_exceptions=True))
        assert [str(r) for r in results] == ["bad input 1", "bad input 2"]


def test_an_unpicklable_result_and_an_oversize_input_are_clear_errors(fc, failing):
    with failing.app.run(client=fc):
        with pytest.raises(Exception, match="(?i)pickle|serializ"):
            failing.unpicklable.remote()
        with pytest.raises(modal.exception.InvalidError, match="at most 64 MiB"):
            failing.echo.remote(b"x" * (65 * 1024 * 1024))
        # The server is unaffected.
        assert failing.echo.remote("small") == "small"


def test_large_arguments_and_results_travel_as_blobs(fn_server, fc, failing):
    """Over 2 MiB the client uploads to a signed URL on latchkey's port (and the container
    downloads from one, and back)."""
    big = os.urandom(5 * 1024 * 1024)
    with failing.app.run(client=fc):
        assert failing.echo.remote(big) == big
    # A blob URL without a valid signature is refused.
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{fn_server.url}/functions/blobs/bl-x?op=get&exp=9999999999&sig=00")
    assert err.value.code == 403


def test_a_container_that_exits_mid_input_and_a_timeout(fc, failing):
    with failing.app.run(client=fc):
        with pytest.raises(modal.exception.InternalFailure, match=r"exited \(code 3\)"):
            failing.exits.remote()
        with pytest.raises(modal.exception.FunctionTimeoutError, match="timed out after 2 seconds"):
            failing.slow.remote()
        assert failing.echo.remote(7) == 7
    wait_no_containers()


IMPORT_FAILS = """
import os
import modal

if os.environ.get("MODAL_IS_REMOTE"):
    raise ImportError("this module fails to import in its container")

app = modal.App()

@app.function()
def f(x):
    return x
"""


def test_a_file_that_fails_to_import_in_its_container(fc, apps_dir):
    mod = load_app(apps_dir, IMPORT_FAILS)
    with mod.app.run(client=fc):
        with pytest.raises(Exception, match="fails to import in its container"):
            mod.f.remote(1)
    wait_no_containers()


SECRET_APP = """
import modal

app = modal.App()

@app.function(secrets=[modal.Secret.from_name("{name}", required_keys={keys})])
def f():
    return 1
"""


def test_a_missing_required_key_and_an_unknown_secret(fc, apps_dir):
    named = named_secret(fc, {"PRESENT": "1"})
    mod = load_app(apps_dir, SECRET_APP.format(name=named, keys='["PRESENT", "ABSENT"]'))
    with pytest.raises(modal.exception.Error, match=r"missing key\(s\): ABSENT"):
        with mod.app.run(client=fc):
            pass
    mod = load_app(apps_dir, SECRET_APP.format(name=unique("no-such-secret"), keys="[]"))
    with pytest.raises(modal.exception.NotFoundError, match="not found"):
        with mod.app.run(client=fc):
            pass


def test_required_keys_are_checked_again_when_a_container_starts(fc, apps_dir):
    named = named_secret(fc, {"NEEDED": "1", "OTHER": "2"})
    mod = load_app(apps_dir, SECRET_APP.format(name=named, keys='["NEEDED"]'))
    with mod.app.run(client=fc):
        # The key goes between the deployment's lookup and the container's start.
        secret_id = modal.Secret.from_name(named, client=fc).hydrate().object_id
        update = api_pb2.SecretUpdateRequest.Update(key="NEEDED")
        support.rpc("SecretUpdate", api_pb2.SecretUpdateRequest(secret_id=secret_id, updates=[update]), client=fc)
        with pytest.raises(modal.exception.RemoteError, match=r"missing key\(s\): NEEDED"):
            mod.f.remote()
    wait_no_containers()


REFUSED = {
    "GPUs": '@app.function(gpu="T4")',
    "volumes": '@app.function(volumes={"/data": modal.Volume.from_name("v", create_if_missing=True)})',
    "schedules": "@app.function(schedule=modal.Period(days=1))",
    "retries": "@app.function(retries=2)",
    "web endpoints": "@app.function()\n@modal.fastapi_endpoint()",
    "generators": "@app.function()",
}


@pytest.mark.parametrize("feature", sorted(REFUSED))
def test_refused_features_are_named(fc, apps_dir, feature):
    body = "    yield 1" if feature == "generators" else "    return 1"
    source = f"import modal\n\napp = modal.App()\n\n{REFUSED[feature]}\ndef f():\n{body}\n"
    mod = load_app(apps_dir, source)
    with pytest.raises(modal.exception.Error, match=f"latchkey does not support {feature}"):
        with mod.app.run(client=fc):
            pass


def test_a_class_is_refused(fc, apps_dir):
    source = (
        "import modal\n\napp = modal.App()\n\n@app.cls()\nclass C:\n"
        "    @modal.method()\n    def m(self):\n        return 1\n"
    )
    mod = load_app(apps_dir, source)
    with pytest.raises(modal.exception.Error, match="latchkey does not support classes"):
        with mod.app.run(client=fc):
            pass


def test_a_client_of_another_version_is_refused_naming_both(fn_server, fc):
    meta = {
        "x-modal-token-id": fn_server.token_id,
        "x-modal-token-secret": fn_server.token_secret,
        "x-modal-client-version": "0.99.1",
    }
    created = support.raw_call(
        fn_server.url, "AppCreate", api_pb2.AppCreateRequest(description=unique("old"), app_state=1), meta
    )
    import grpclib

    with pytest.raises(grpclib.GRPCError) as err:
        support.raw_call(
            fn_server.url,
            "FunctionCreate",
            api_pb2.FunctionCreateRequest(
                app_id=created.app_id,
                function=api_pb2.Function(function_name="f", module_name="m"),
            ),
            meta,
        )
    assert err.value.status.name == "FAILED_PRECONDITION"
    assert "0.99.1" in err.value.message and modal.__version__ in err.value.message
    # The same modal on another Python: pickles would not cross either.
    meta["x-modal-client-version"] = modal.__version__
    meta["x-modal-python-version"] = "3.1.4"
    with pytest.raises(grpclib.GRPCError) as err:
        support.raw_call(
            fn_server.url,
            "FunctionCreate",
            api_pb2.FunctionCreateRequest(
                app_id=created.app_id,
                function=api_pb2.Function(function_name="f", module_name="m"),
            ),
            meta,
        )
    assert err.value.status.name == "FAILED_PRECONDITION"
    ours = "%d.%d" % sys.version_info[:2]
    assert "Python 3.1.4" in err.value.message and f"Python {ours}" in err.value.message
    support.raw_call(fn_server.url, "AppStop", api_pb2.AppStopRequest(app_id=created.app_id), meta)


LONG_APP = """
import time
import modal

app = modal.App("{name}")

@app.function()
def f():
    return 1

@app.local_entrypoint()
def main():
    print("first run holds the name", flush=True)
    time.sleep(60)
"""


def test_a_second_modal_run_of_the_same_app_name(fn_server, apps_dir, home):
    name = unique("twice")
    path = write_app(apps_dir, LONG_APP.format(name=name))
    first = subprocess.Popen(
        [str(support.MODAL_CLI), "run", str(path)],
        env=support.client_env(fn_server, home),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        line = ""
        deadline = time.time() + 30
        while "first run holds the name" not in line and time.time() < deadline:
            line = first.stdout.readline()
        second = cli(fn_server, home, "run", str(path), check=False, timeout=60)
        assert f"App '{name}' is already running" in second.flat(), second
    finally:
        first.terminate()
        first.wait(timeout=30)
    wait_no_containers()


# ---------------------------------------------------------------------------
# Roles and environments.


def test_only_developers_create_and_call_functions_and_env_limits_apply(fn_server, fc, apps_dir):
    reader = support.open_client(fn_server.url, *_token(fn_server, "reader"))
    mod = load_app(apps_dir, "import modal\n\napp = modal.App()\n\n@app.function()\ndef f(x):\n    return x\n")
    with pytest.raises(modal.exception.PermissionDeniedError, match="may not create apps"):
        with mod.app.run(client=reader):
            pass
    # A reader may not call a function either.
    with mod.app.run(client=fc):
        with pytest.raises(modal.exception.PermissionDeniedError, match="may not call functions"):
            support.rpc(
                "FunctionMap",
                api_pb2.FunctionMapRequest(
                    function_id=mod.f.object_id,
                    function_call_type=api_pb2.FUNCTION_CALL_TYPE_UNARY,
                ),
                client=reader,
            )
    reader.close()
    # A token limited to another environment sees none of main's apps.
    other = unique("envfn")
    modal.Environment.objects.create(other, client=fc)
    limited = support.open_client(fn_server.url, *_token(fn_server, "developer", [other]))
    with pytest.raises(modal.exception.PermissionDeniedError):
        support.rpc("AppList", api_pb2.AppListRequest(environment_name="main"), client=limited)
    listed = support.rpc("AppList", api_pb2.AppListRequest(environment_name=other), client=limited)
    assert list(listed.apps) == []
    limited.close()


def test_functions_are_off_by_default(server, home, apps_dir):
    path = write_app(apps_dir, "import modal\n\napp = modal.App()\n\n@app.function()\ndef f():\n    return 1\n")
    result = cli(server, home, "run", str(path), check=False)
    assert "functions are disabled on this server; start it with --functions" in result.flat(), result


def test_the_server_refuses_an_interpreter_without_modal(start_server, tmp_path):
    server = start_server(args=["--functions", "--function-python", "/usr/bin/true"], wait=False)
    deadline = time.time() + 15
    while server.running() and time.time() < deadline:
        time.sleep(0.1)
    assert not server.running()
    assert "--function-python /usr/bin/true" in server.log(), server.log()
    server = start_server(args=["--functions", "--function-python", str(tmp_path / "nope")], wait=False)
    deadline = time.time() + 15
    while server.running() and time.time() < deadline:
        time.sleep(0.1)
    assert "no such file" in server.log(), server.log()
