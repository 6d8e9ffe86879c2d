"""Limits (issue 16) as Modal's real client meets them: a message over the
16 MiB limit is an InvalidError naming it (not retried), and connection
timeouts set short (1 s) cut neither the client's connection between calls
nor a sandbox's output stream and wait that last longer."""

from __future__ import annotations

import time

import modal
import modal.exception
import pytest
from modal_proto import api_pb2

from support import client_for, rpc, unique
from test_sandbox_modal import _bwrap_works

SHORT_TIMEOUTS = {
    "LATCHKEY_IDLE_CONNECTION_TIMEOUT": "1s",
    "LATCHKEY_HEADER_READ_TIMEOUT": "1s",
}


def test_a_message_over_16_mib_is_invalid_and_names_the_limit(server):
    request = api_pb2.SecretGetOrCreateRequest(
        deployment_name=unique("big"),
        object_creation_type=api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING,
        env_dict={"BIG": "x" * (16 * 1024 * 1024 + 1024)},
    )
    with pytest.raises(modal.exception.InvalidError, match="16 MiB"):
        rpc("SecretGetOrCreate", request)


@pytest.fixture(scope="module")
def short_server(start_server):
    if not _bwrap_works():
        pytest.fail("bubblewrap (bwrap) is missing or unusable here: apt-get install bubblewrap")
    return start_server(args=["--sandboxes"], env=SHORT_TIMEOUTS)


def test_short_connection_timeouts_cut_no_connection_in_use(short_server):
    client = client_for(short_server)
    try:
        name = unique("kept")
        rpc(
            "SecretGetOrCreate",
            api_pb2.SecretGetOrCreateRequest(
                deployment_name=name,
                object_creation_type=api_pb2.OBJECT_CREATION_TYPE_CREATE_FAIL_IF_EXISTS,
                env_dict={"A": "1"},
            ),
            client=client,
        )
        # Calls after pauses longer than both timeouts.
        for _ in range(2):
            time.sleep(2.5)
            listed = rpc("SecretList", api_pb2.SecretListRequest(), client=client)
            assert name in [s.label for s in listed.items]
        # A sandbox whose output stream and wait last longer than both.
        app = modal.App.lookup(unique("app"), create_if_missing=True, client=client)
        sb = modal.Sandbox.create("sh", "-c", "echo first; sleep 3; echo second", app=app, client=client)
        assert sb.stdout.read() == "first\nsecond\n"
        sb.wait()
        assert sb.returncode == 0
    finally:
        client.close()
