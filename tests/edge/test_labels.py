"""Metric label values come from fixed sets, never from what a client sent."""

from __future__ import annotations

import re

from server.metrics import OTHER, Metrics
from server.protocol import REJECTION_FIELDS, Disconnects
from tests.conftest import LiveServer, auth, recv_op, send
from tests.server.conftest import frame, now_ms

MADE_UP = [f"zz_made_up_{i}" for i in range(40)]


def label_values(text: str, metric: str, label: str) -> set[str]:
    pattern = re.compile(rf'^{metric}\{{[^}}]*{label}="([^"]*)"', re.MULTILINE)
    return set(pattern.findall(text))


async def test_unknown_frame_keys_are_counted_as_other_over_websocket_and_rest(
    live_server: LiveServer,
) -> None:
    ws = await live_server.connect("alice")
    try:
        t0 = now_ms() - 10_000
        frames = [{**frame(t0 + i), key: 1} for i, key in enumerate(MADE_UP[:20])]
        frames.append(frame(t0 + 99, hr=999))
        await send(ws, {"op": "frames", "seq": 1, "frames": frames})
        ack = await recv_op(ws, "ack")
        assert {r["field"] for r in ack["rejected"]} == {*MADE_UP[:20], "hr"}
    finally:
        await ws.close()
    async with live_server.http() as client:
        body = {"frames": [{**frame(t0 + 200 + i), k: 1} for i, k in enumerate(MADE_UP[20:])]}
        response = await client.post("/v1/users/alice/frames", json=body, headers=auth("alice"))
        assert response.status_code < 500, response.text
        text = (await client.get("/metrics")).text
    fields = label_values(text, "companion_frames_rejected_total", "field")
    assert fields == {OTHER, "hr"}
    assert not any(key in text for key in MADE_UP)


def test_every_fixed_label_set_keeps_its_own_values_and_folds_the_rest() -> None:
    metrics = Metrics()
    for name in sorted(REJECTION_FIELDS):
        metrics.frames_rejected.labels(name).inc()
    metrics.frames_rejected.labels("whatever the client said").inc()
    for disconnect in Disconnects.all():
        metrics.closes.labels(disconnect.reason).inc()
    metrics.closes.labels("1006").inc()
    metrics.handshake_rejects.labels("SomeNewError").inc()
    text = metrics.render().decode()
    assert label_values(text, "companion_frames_rejected_total", "field") == {
        *REJECTION_FIELDS,
        OTHER,
    }
    assert label_values(text, "companion_closes_total", "reason") == {
        *(d.reason for d in Disconnects.all()),
        OTHER,
    }
    assert label_values(text, "companion_handshake_rejects_total", "reason") == {OTHER}
