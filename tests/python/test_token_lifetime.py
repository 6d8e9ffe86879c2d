"""Tokens that expire and rotate, and throttled authentication, seen by the
unmodified Modal client: an expired token, or a rotated-out secret past its
grace period, is an AuthError naming what happened; the new secret works; an
address past the limit of failed authentications gets ResourceExhaustedError
naming the wait."""

import json
import os
import subprocess
import time

import modal.exception
import pytest
from google.protobuf.empty_pb2 import Empty

from support import latchkey_bin, open_client, rpc


def latchkey(server, *args: str) -> dict:
    """Run the latchkey CLI with the server's admin token; its JSON answer."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LATCHKEY_", "MODAL_"))}
    env.update(
        LATCHKEY_SERVER_URL=server.url,
        LATCHKEY_TOKEN_ID=server.token_id,
        LATCHKEY_TOKEN_SECRET=server.token_secret,
    )
    out = subprocess.run(
        [str(latchkey_bin()), *args, "--json"], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def hello(server, token_id: str, secret: str):
    client = open_client(server.url, token_id, secret)
    try:
        return rpc("ClientHello", Empty(), client)
    finally:
        client.close()


def test_expiry_and_rotation_through_the_modal_client(server):
    short = latchkey(server, "token", "create", "py-short", "--role", "reader", "--ttl", "2s")
    token_id, secret = short["token"]["id"], short["secret"]
    ci = latchkey(server, "token", "create", "py-ci", "--role", "reader")
    rotated = latchkey(server, "token", "rotate", ci["token"]["id"], "--grace", "2s")
    assert rotated["token"]["id"] == ci["token"]["id"]

    hello(server, token_id, secret)
    hello(server, ci["token"]["id"], ci["secret"])
    hello(server, ci["token"]["id"], rotated["secret"])

    time.sleep(2.5)
    with pytest.raises(modal.exception.AuthError) as exc:
        hello(server, token_id, secret)
    assert f"token {token_id} expired at {short['token']['expires_at']}" in str(exc.value)
    assert secret not in str(exc.value)
    with pytest.raises(modal.exception.AuthError):
        hello(server, ci["token"]["id"], ci["secret"])
    hello(server, ci["token"]["id"], rotated["secret"])

    listed = {t["id"]: t for t in latchkey(server, "token", "list")}
    assert listed[token_id]["expires_at"] == short["token"]["expires_at"]
    assert listed[token_id]["last_used_at"] is not None


def test_failed_authentication_is_throttled_for_the_modal_client(start_server):
    server = start_server(args=["--auth-failure-limit", "2"])
    for _ in range(2):
        with pytest.raises(modal.exception.AuthError):
            hello(server, server.token_id, "as-" + "G" * 32)
    for secret in ["as-" + "G" * 32, server.token_secret]:
        with pytest.raises(modal.exception.ResourceExhaustedError) as exc:
            hello(server, server.token_id, secret)
        assert "try again in" in str(exc.value)
