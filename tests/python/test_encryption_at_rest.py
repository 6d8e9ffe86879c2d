"""No plaintext secret value (and no token secret) in any file of the data dir, or in the log."""

import secrets as pysecrets

import modal
from modal_proto import api_pb2

from support import client_for, fake_app_id, hydrate_in_app, rpc, snapshot_dir


def _files(data_dir):
    return [p for p in sorted(data_dir.rglob("*")) if p.is_file()]


def _find(data_dir, needles: dict[str, bytes]):
    hits = []
    for path in _files(data_dir):
        blob = path.read_bytes()
        for label, needle in needles.items():
            if needle in blob:
                hits.append(f"{label} in {path.name}")
    return hits


def test_values_are_encrypted_at_rest(start_server):
    srv = start_server()
    marker = pysecrets.token_hex(16)
    values = {
        "named": f"PLAINTEXT-NAMED-{marker}",
        "updated": f"PLAINTEXT-UPDATED-{marker}",
        "ephemeral": f"PLAINTEXT-EPHEMERAL-{marker}",
        "app-owned": f"PLAINTEXT-APPOWNED-{marker}",
        "overwritten": f"PLAINTEXT-OVERWRITE-{marker}",
    }
    client = client_for(srv)
    try:
        modal.Secret.objects.create("enc-named", {"V": values["named"]}, client=client)
        # Many small writes so the WAL is well populated.
        for i in range(20):
            modal.Secret.objects.create(f"enc-bulk-{i}", {"V": f"{values['named']}-{i}"}, client=client)
        secret = modal.Secret.from_name("enc-named", client=client)
        secret.update({"W": values["updated"]})
        modal.Secret.from_dict({"V": values["ephemeral"]}).hydrate(client=client)
        hydrate_in_app(modal.Secret.from_dict({"V": values["app-owned"]}), fake_app_id(), client=client)
        rpc(
            "SecretGetOrCreate",
            api_pb2.SecretGetOrCreateRequest(
                deployment_name="enc-over",
                object_creation_type=api_pb2.OBJECT_CREATION_TYPE_CREATE_OVERWRITE_IF_EXISTS,
                env_dict={"V": values["overwritten"]},
            ),
            client,
        )
    finally:
        client.close()

    token_secret = srv.token_secret
    needles = {label: v.encode() for label, v in values.items()}
    needles["marker"] = marker.encode()
    needles["token secret"] = token_secret.encode()

    files_running = [p.name for p in _files(srv.data_dir)]
    assert any("latchkey.db" in name for name in files_running), files_running
    hits = [h for h in _find(srv.data_dir, needles) if not h.startswith("token secret in admin-token")]
    assert not hits, f"plaintext found while running: {hits} (files: {files_running})"

    assert srv.stop() == 0
    hits = [h for h in _find(srv.data_dir, needles) if not h.startswith("token secret in admin-token")]
    assert not hits, f"plaintext found after shutdown: {hits} (files: {snapshot_dir(srv.data_dir)})"

    log = srv.log()
    assert marker not in log, "a secret value appears in the server log"
    assert token_secret not in log, "the token secret appears in the server log"
