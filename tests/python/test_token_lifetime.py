"""Tokens that expire and rotate, seen by the unmodified Modal client: an
expired token, or a rotated-out secret past its grace period, is an AuthError
naming what happened; the new secret works."""

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
