"""The audit log seen from the unmodified Modal client (issue 14): what the client does is
recorded with its token and interface, lookups are not (unless --audit-metadata-reads), and
no value reaches the log."""

import modal
import modal.exception
import pytest

from support import api, client_for, open_client, unique


def events(server, **filters) -> list[dict]:
    query = "&".join(f"{k}={v}" for k, v in filters.items())
    status, body = api(server, "GET", f"/audit?{query}")
    assert status == 200, body
    return body["items"]


def test_the_clients_writes_are_recorded_and_lookups_are_not(server):
    name = unique("aud")
    modal.Secret.objects.create(name, {"PASSWORD": "p4ssw0rd-in-the-log?"})
    secret = modal.Secret.from_name(name)
    secret.hydrate()
    secret.update({"PASSWORD": "an0ther-p4ssw0rd"})
    modal.Secret.objects.delete(name)
    log = events(server, secret=name)
    assert [(e["action"], e["version"], e["interface"]) for e in log] == [
        ("secret.create", 1, "grpc"),
        ("secret.update", 2, "grpc"),
        ("secret.delete", 2, "grpc"),
    ], log
    assert all(e["actor"]["id"] == server.token_id and e["client"] == "127.0.0.1" for e in log)
    assert "p4ssw0rd" not in str(events(server)), "no value in the log"


def test_a_wrong_token_is_recorded_as_a_failed_authentication(server):
    bad = open_client(server.url, server.token_id, "as-" + "x" * 32)
    with pytest.raises(modal.exception.AuthError):
        modal.Secret.from_name(unique("aud")).hydrate(client=bad)
    failures = [e for e in events(server, action="auth.failure") if server.token_id in (e["detail"] or "")]
    assert failures and failures[-1]["interface"] == "grpc", failures
    assert "x" * 32 not in str(failures)


def test_metadata_reads_are_recorded_when_asked(start_server):
    server = start_server(args=["--audit-metadata-reads"])
    client = client_for(server)
    name = unique("aud")
    modal.Secret.objects.create(name, {"A": "1"}, client=client)
    modal.Secret.from_name(name).hydrate(client=client)
    info = events(server, secret=name, action="secret.info")
    assert [(e["interface"], e["version"]) for e in info] == [("grpc", 1)], info
    status, body = api(server, "POST", "/audit/verify")
    assert (status, body["intact"]) == (200, True), body
