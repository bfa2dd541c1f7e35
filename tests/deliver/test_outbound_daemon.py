"""Issue 19 on the real daemon: filters, transforms, v1a, trace context, mTLS and OTLP spans.

Every receiver is a real HTTP(S) server on 127.0.0.1; the daemon is `bridge run`.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from standardwebhooks.webhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bridge.deliver.signing import public_key
from bridge.store.sqlite import SQLiteStore
from tests.conftest import TEST_SECRET
from tests.deliver.test_outbound_units import SEED, verify_v1a
from tests.helpers import DaemonProcess, _ThreadServer, free_port, run_cli, serve_app, wait_until

PARENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{PARENT_TRACE}-00f067aa0ba902b7-01"


class Receiver:
    """Records every request (path, headers, body) and answers 204."""

    def __init__(self) -> None:
        self.hits: list[tuple[str, dict[str, str], bytes]] = []
        self._lock = threading.Lock()

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            body = await request.body()
            with self._lock:
                self.hits.append((request.url.path, dict(request.headers), body))
            return Response(status_code=204)

        return Starlette(routes=[Route("/{name:path}", hook, methods=["POST"])])

    def at(self, path: str) -> list[tuple[dict[str, str], bytes]]:
        with self._lock:
            return [(h, b) for p, h, b in self.hits if p == path]


def post_event(daemon: DaemonProcess, body: dict, headers: dict[str, str] | None = None) -> None:
    r = httpx.post(daemon.url + "/hooks/shop", json=body, headers=headers or {}, timeout=5)
    assert r.status_code == 202, r.text


def deliveries(config: Path, env: dict[str, str] | None = None) -> list[dict]:
    result = run_cli("deliveries", "-c", str(config), "--json", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


SOURCE = """
database: bridge.db
sources:
  shop:
    webhook: {verify: none, allow_unsigned: true, subject: body.subject}
"""


def test_filters_transforms_v1a_and_traceparent_reach_the_receivers(
    tmp_path: Path, daemon: Callable[..., DaemonProcess]
) -> None:
    receiver = Receiver()
    with serve_app(receiver.app()) as url:
        proc = daemon(
            SOURCE
            + f"""
targets:
  big:
    url: {url}/big
    secret: ["{TEST_SECRET}", "{SEED}"]
    filter: "data.amount > `1000`"
    transform: "{{amount: data.amount, who: subject}}"
    retry: [100ms]
  binary:
    url: {url}/binary
    secret: "{SEED}"
    format: binary
    transform: "{{a: data.amount}}"
  broken:
    url: {url}/broken
    secret: "{TEST_SECRET}"
    transform: "to_number('1e400')"
"""
        )
        big = {"id": "o1", "type": "order.paid", "subject": "cus_1", "amount": 5000, "extra": "x"}
        post_event(proc, big, {"traceparent": TRACEPARENT, "tracestate": "k=v"})
        post_event(proc, {"id": "o2", "type": "order.paid", "amount": 10})
        wait_until(lambda: len(receiver.at("/binary")) == 2, timeout_s=20)
        wait_until(lambda: len(receiver.at("/big")) == 1, timeout_s=20)
        wait_until(
            lambda: (
                [d["status"] for d in deliveries(proc.config_path) if d["target"] == "broken"]
                == ["dead", "dead"]
            ),
            timeout_s=20,
        )
        assert proc.terminate() == 0

    # The filter sent only the big order; the transform shaped data, the signatures cover it.
    ((headers, body),) = receiver.at("/big")
    event = json.loads(body)
    assert event["type"] == "order.paid" and event["subject"] == "cus_1"
    assert event["data"] == {"amount": 5000, "who": "cus_1"}
    assert Webhook(TEST_SECRET).verify(body, headers)["data"] == {"amount": 5000, "who": "cus_1"}
    signatures = headers["webhook-signature"].split(" ")
    assert [s.split(",")[0] for s in signatures] == ["v1", "v1a"]
    assert verify_v1a(public_key(SEED), headers["webhook-id"], int(headers["webhook-timestamp"]),
                      body, headers["webhook-signature"])  # fmt: skip
    # The inbound trace goes on: same trace id, a new span id, the state as it came.
    version, trace_id, span_id, flags = headers["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", PARENT_TRACE, "01")
    assert span_id != "00f067aa0ba902b7" and headers["tracestate"] == "k=v"

    # Binary mode: the body is the transformed data, signed with v1a only.
    by_id = {h["ce-id"]: (h, b) for h, b in receiver.at("/binary")}
    amounts = sorted(json.loads(b)["a"] for _, b in by_id.values())
    assert amounts == [10, 5000]
    for h, b in by_id.values():
        assert h["webhook-signature"].startswith("v1a,")
        assert verify_v1a(public_key(SEED), h["webhook-id"], int(h["webhook-timestamp"]), b,
                          h["webhook-signature"])  # fmt: skip
    # An event without a trace context got one of its own (one trace per event).
    traces = {h["ce-id"]: h["traceparent"].split("-")[1] for h, _ in by_id.values()}
    assert len(set(traces.values())) == 2 and PARENT_TRACE in traces.values()

    # The broken transform: dead at the first attempt, the reason kept, nothing sent.
    assert receiver.at("/broken") == []
    rows = deliveries(proc.config_path)
    broken = [d for d in rows if d["target"] == "broken"]
    assert all(d["attempts"] == 1 and "not JSON" in d["last_error"] for d in broken)
    assert all(d["transformed"] for d in rows if d["target"] in ("big", "binary", "broken"))
    table = run_cli("deliveries", "-c", str(proc.config_path)).stdout
    assert "transform" in table and "applied" in table
    # The stored event is the one received, whole.
    stored = asyncio.run(_stored(tmp_path / "bridge.db"))
    assert {e["data"].get("extra") for e in stored if e["id"]} >= {"x"}
    assert "Traceback" not in proc.log()


async def _stored(db: Path) -> list[dict]:
    store = SQLiteStore(db)
    store.open()
    try:
        return [e.to_cloudevent() for e in await store.list_events()]
    finally:
        store.close()


# -- mutual TLS ------------------------------------------------------------------------------


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: tuple | None,
          *, ca: bool = False, server: bool = False) -> x509.Certificate:  # fmt: skip
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer if issuer else (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
        builder = builder.add_extension(san, critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())  # fmt: skip


def make_pki(folder: Path) -> dict[str, Path]:
    """A test CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("bridge test CA", ca_key, None, ca=True)
    issuer = (ca.subject, ca_key)
    files: dict[str, Path] = {}
    for name, server in (("server", True), ("client", False)):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(f"bridge test {name}", key, issuer, server=server)
        files[f"{name}.crt"] = folder / f"{name}.crt"
        files[f"{name}.crt"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        files[f"{name}.key"] = folder / f"{name}.key"
        files[f"{name}.key"].write_bytes(_pem_key(key))
    files["ca.crt"] = folder / "ca.crt"
    files["ca.crt"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return files


@contextmanager
def serve_https(app: Starlette, pki: dict[str, Path]) -> Iterator[str]:
    """Serve `app` over HTTPS on 127.0.0.1, requiring a client certificate from the test CA."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, lifespan="off",
        ssl_certfile=str(pki["server.crt"]), ssl_keyfile=str(pki["server.key"]),
        ssl_ca_certs=str(pki["ca.crt"]), ssl_cert_reqs=ssl.CERT_REQUIRED,
    )  # fmt: skip
    server = _ThreadServer(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, timeout_s=10)
        yield f"https://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_client_certificates_and_a_private_ca(
    tmp_path: Path, daemon: Callable[..., DaemonProcess]
) -> None:
    pki = make_pki(tmp_path)
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "client.key").write_bytes(pki["client.key"].read_bytes())
    receiver = Receiver()
    with serve_https(receiver.app(), pki) as url:
        proc = daemon(
            SOURCE
            + f"""
targets:
  mtls:
    url: {url}/mtls
    secret: "{TEST_SECRET}"
    tls: {{cert: client.crt, key: "${{credential:client.key}}", ca: {pki["ca.crt"]}}}
  no-cert:
    url: {url}/no-cert
    secret: "{TEST_SECRET}"
    tls: {{ca: ca.crt}}
    retry: [100ms]
""",
            env={"CREDENTIALS_DIRECTORY": str(credentials)},
        )
        post_event(proc, {"id": "o1", "type": "order.paid"})
        wait_until(lambda: len(receiver.at("/mtls")) == 1, timeout_s=20)
        wait_until(
            lambda: (
                [
                    d["status"]
                    for d in deliveries(proc.config_path, proc.extra_env)
                    if d["target"] == "no-cert"
                ]
                == ["dead"]
            ),
            timeout_s=20,
        )
        assert proc.terminate() == 0
    ((headers, body),) = receiver.at("/mtls")
    Webhook(TEST_SECRET).verify(body, headers)
    # Without a client certificate the server refuses the handshake: nothing arrived.
    assert receiver.at("/no-cert") == []
    assert "Traceback" not in proc.log()
    # The key's text never shows in the log.
    assert "PRIVATE KEY" not in proc.log()


def test_check_names_the_tls_key_that_cannot_load(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        f"targets:\n  t:\n    url: https://127.0.0.1:1/\n    secret: {TEST_SECRET}\n"
        "    tls:\n      ca: missing.pem\n"
    )
    result = run_cli("check", "-c", str(config))
    assert result.returncode == 2
    assert result.stderr.strip().startswith(f"{config}:6: targets.t.tls.ca: cannot load the CA")


# -- OTLP export -----------------------------------------------------------------------------


def test_spans_are_exported_to_an_otlp_receiver(
    tmp_path: Path, daemon: Callable[..., DaemonProcess]
) -> None:
    pytest.importorskip("opentelemetry.sdk", reason="the tracing extra is not installed")
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    receiver = Receiver()
    with serve_app(receiver.app()) as url:
        proc = daemon(
            SOURCE
            + f"""
tracing: {{otlp: "{url}/v1/traces"}}
targets:
  t:
    url: {url}/hook
    secret: "{TEST_SECRET}"
"""
        )
        post_event(proc, {"id": "o1", "type": "order.paid"}, {"traceparent": TRACEPARENT})
        wait_until(lambda: len(receiver.at("/hook")) == 1, timeout_s=20)

        def spans() -> dict[str, list]:
            out: dict[str, list] = {}
            for _, body in receiver.at("/v1/traces"):
                request = ExportTraceServiceRequest.FromString(body)
                for resource in request.resource_spans:
                    for scope in resource.scope_spans:
                        for span in scope.spans:
                            out.setdefault(span.name, []).append(span)
            return out

        found = wait_until(lambda: (s := spans()) and {"receive", "store", "deliver"} <= set(s)
                           and s, timeout_s=20)  # fmt: skip
        assert proc.terminate() == 0
    ((hook_headers, _),) = receiver.at("/hook")
    sent_span = hook_headers["traceparent"].split("-")[2]
    (deliver,) = found["deliver"]
    assert deliver.trace_id.hex() == PARENT_TRACE and deliver.span_id.hex() == sent_span
    (receive,) = found["receive"]
    assert receive.trace_id.hex() == PARENT_TRACE
    assert receive.parent_span_id.hex() == "00f067aa0ba902b7"
    assert found["store"][0].parent_span_id == receive.span_id
