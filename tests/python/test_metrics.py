"""`GET /metrics`: Prometheus text, parsed with the Prometheus client's own parser, after
traffic on every interface; who may read it; no secret or token name in it."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

import modal
import pytest

import support
from support import client_for, metric, scrape_metrics, unique


def wait_for_metric(server, name: str, want: float, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        _, text = scrape_metrics(server)
        if metric(text, name) == want:
            return
        assert time.monotonic() < deadline, f"{name} never became {want}:\n{text}"
        time.sleep(0.1)


def test_counters_move_with_traffic_and_hold_no_names(start_server):
    server = start_server(args=["--sandboxes"])
    status, before = scrape_metrics(server)
    assert status == 200
    assert metric(before, "latchkey_build_info") == 1
    assert metric(before, "latchkey_sandboxes_running") == 0
    for name in ("latchkey_store_errors_total", "latchkey_store_unavailable_total",
                 "latchkey_store_write_collisions_total",
                 "latchkey_change_feed_reconnects_total"):  # fmt: skip
        assert metric(before, name) == 0, name

    secret_name = unique("metric-secret")
    value = unique("metric-value")
    token_name = unique("metric-token")
    client = client_for(server)
    try:
        # gRPC: a create, then lookups (the first misses the cache, the rest hit it).
        modal.Secret.objects.create(secret_name, {"KEY": value}, client=client)
        for _ in range(4):
            modal.Secret.from_name(secret_name, required_keys=["KEY"]).hydrate(client=client)
        # The JSON API: a read by name, an update (the cache forgets the secret), a token.
        assert support.api(server, "GET", f"/secrets/{secret_name}")[0] == 200
        assert support.api(server, "PATCH", f"/secrets/{secret_name}", {"values": {"KEY": value + "2"}})[0] == 200
        assert support.api(server, "POST", "/tokens", {"name": token_name, "role": "reader"})[0] == 201
        # A wrong token on the API and on gRPC.
        bad = urllib.request.Request(f"{server.url}/api/v1/secrets/{secret_name}",
                                     headers={"Authorization": "Bearer ak-nobody:as-nothing"})  # fmt: skip
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(bad, timeout=5)
        assert refused.value.code == 401
        stranger = support.open_client(server.url, "ak-nobody", "as-nothing")
        with pytest.raises(modal.exception.AuthError):
            modal.Secret.from_name(secret_name).hydrate(client=stranger)
        # The dashboard.
        assert support.http_get(f"{server.url}/signin")[0] == 200
        # A sandbox: running while it sleeps, not once terminated.
        app = modal.App.lookup(unique("app"), create_if_missing=True, client=client)
        sandbox = modal.Sandbox.create("sleep", "30", app=app, client=client)
        wait_for_metric(server, "latchkey_sandboxes_running", 1)
        sandbox.terminate()
        sandbox.wait(raise_on_termination=False)
        wait_for_metric(server, "latchkey_sandboxes_running", 0)
    finally:
        client.close()

    status, text = scrape_metrics(server)
    assert status == 200

    def moved(name: str, **labels: str) -> float:
        return metric(text, name, **labels) - (metric(before, name, **labels) if name in before else 0)

    lookup = "modal.client.ModalClient/SecretGetOrCreate"
    assert metric(text, "latchkey_requests_total", interface="grpc", route=lookup, status="Ok") >= 5
    assert metric(text, "latchkey_requests_total", interface="grpc", route=lookup, status="Unauthenticated") >= 1
    assert metric(text, "latchkey_request_duration_seconds_count", interface="grpc", route=lookup) >= 5
    assert metric(text, "latchkey_request_duration_seconds_bucket", interface="grpc", route=lookup, le="+Inf") >= 5
    secret_route = "/api/v1/secrets/{name}"
    assert metric(text, "latchkey_requests_total", interface="api", route=secret_route, status="200") >= 2
    assert metric(text, "latchkey_requests_total", interface="api", route=secret_route, status="401") == 1
    assert metric(text, "latchkey_requests_total", interface="api", route="/api/v1/tokens", status="201") == 1
    assert metric(text, "latchkey_requests_total", interface="dashboard", route="/signin", status="200") == 1
    assert moved("latchkey_auth_failures_total", reason="invalid") >= 2
    assert moved("latchkey_lookup_cache_hits_total") >= 3
    assert moved("latchkey_lookup_cache_misses_total", reason="absent") >= 1
    assert moved("latchkey_lookup_cache_invalidations_total", scope="secret") >= 1
    assert metric(text, "latchkey_group_commit_batch_size_count", group="writes") >= 1
    assert metric(text, "latchkey_group_commit_batch_size_bucket", group="writes", le="1") >= 1

    # Names and values stay out: labels are route templates and declared RPCs only.
    for private in (secret_name, value, token_name, server.token_id, server.token_secret):
        assert private not in text, private


def test_unknown_paths_and_rpcs_do_not_become_labels(server):
    path = unique("no-such-page")
    assert support.http_get(f"{server.url}/{path}")[0] == 404
    rpc = unique("NoSuchRpc")
    unknown = urllib.request.Request(
        f"{server.url}/modal.client.ModalClient/{rpc}",
        data=b"\0\0\0\0\0",
        headers={"Content-Type": "application/grpc"},
    )
    with urllib.request.urlopen(unknown, timeout=5) as resp:
        assert resp.headers["grpc-status"] == "12"  # UNIMPLEMENTED
    _, text = scrape_metrics(server)
    assert path not in text and rpc not in text
    assert metric(text, "latchkey_requests_total", interface="dashboard", route="unmatched", status="404") >= 1
    assert metric(text, "latchkey_requests_total", interface="grpc", route="unknown", status="Unimplemented") >= 1


def test_the_metrics_token_file_is_checked_at_start(start_server, tmp_path):
    """Tests reach the server from loopback only, where no token is needed; the
    refusal of other clients without the token is a unit test of `MetricsAccess`."""
    short = tmp_path / "short"
    short.write_text("abc\n")
    bad = start_server(args=["--metrics-token-file", str(short)], wait=False)
    assert bad.proc.wait(timeout=30) != 0
    assert "--metrics-token-file" in bad.log() and "at least 16 characters" in bad.log()
    missing = start_server(args=["--metrics-token-file", str(tmp_path / "missing")], wait=False)
    assert missing.proc.wait(timeout=30) != 0
    assert "cannot read it" in missing.log()

    token = tmp_path / "token"
    token.write_text("0123456789abcdef0123456789abcdef\n")
    server = start_server(args=["--metrics-token-file", str(token)])
    assert scrape_metrics(server)[0] == 200
    assert "0123456789abcdef0123456789abcdef" not in server.log()
