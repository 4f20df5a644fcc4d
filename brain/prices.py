"""The one dated table of prices that the server's live cost view and bench.cost share.

:data:`PRICES` holds US dollars as published on ``as_of`` (us-east-1, on-demand); change
them here and both the ``companion_cost_usd_total`` metric and the benchmark follow. LLM
tokens are priced per model family in :mod:`brain.analyst.pricing` (the guard bills each
call with them); the Haiku 4.5 entries below are the ones the benchmark reports with.
"""

from __future__ import annotations

from typing import Any, Final

PRICES: Final[dict[str, Any]] = {
    "as_of": "2026-12-01",
    "source": "published list prices, us-east-1, on-demand (issue 19)",
    "dynamodb_wru_per_million": 0.625,
    "dynamodb_rru_per_million": 0.125,
    "dynamodb_gb_month": 0.25,
    "s3_put_per_thousand": 0.005,
    "s3_get_per_thousand": 0.0004,
    "s3_gb_month": 0.023,
    "haiku_45_input_per_mtok": 1.0,
    "haiku_45_output_per_mtok": 5.0,
    "cache_write_factor": 1.25,
    "cache_read_factor": 0.1,
    "image_per_generation": 0.039,
    "image_note": "Gemini 2.5 Flash Image: 1,290 output tokens at $30/M (assumed)",
    "clip_per_second": 0.40,
    "clip_note": "Veo 3 Fast on Vertex AI, per second of video with audio (assumed list price)",
    "egress_per_gb": 0.09,
}
"""Prices in US dollars, as of ``as_of``."""

FRAMES_PER_WRITE_UNIT: Final = 60
"""Frames one DynamoDB write unit holds in the packed layout when the phone sends a minute
per upload at 1 Hz (the bridge's cadence; bench.cost measures 59.7 on the scripted day,
spikes included), used to estimate the storage writes of frames live. A client that
uploads frame by frame costs up to 60 times more; the estimate does not see it."""

PUSH_BYTES: Final = 400
"""Bytes one pushed delta or snapshot costs in egress (frame, headers and TLS overhead)."""

PUSH_OVERHEAD_BYTES: Final = 80
"""Bytes a pushed WebSocket frame costs beyond itself: its TLS record (header, tag) and its
share of TCP/IP headers. The live meter bills each frame's own bytes plus this."""

CLIP_SECONDS: Final = 4
"""Seconds of one generated avatar clip."""


def frames_cost(frames: int) -> float:
    """Estimated dollars of writing ``frames`` frames to the packed frame store (a share of
    a write unit per frame: buckets fill across the write-behind batches)."""
    units = frames / FRAMES_PER_WRITE_UNIT
    return float(units * PRICES["dynamodb_wru_per_million"] / 1e6)


def pushes_cost(messages: int) -> float:
    """Estimated dollars of the egress of ``messages`` pushed messages."""
    return float(messages * PUSH_BYTES * PRICES["egress_per_gb"] / 1e9)


def pushed_bytes_cost(messages: int, frame_bytes: int) -> float:
    """Estimated dollars of the egress of ``messages`` pushed frames of ``frame_bytes``
    bytes in all (each with :data:`PUSH_OVERHEAD_BYTES` more on the wire)."""
    wire_bytes = frame_bytes + messages * PUSH_OVERHEAD_BYTES
    return float(wire_bytes * PRICES["egress_per_gb"] / 1e9)


def images_cost(generations: int) -> float:
    """Dollars of ``generations`` avatar images generated (a cache hit costs nothing)."""
    return float(generations * PRICES["image_per_generation"])


def clips_cost(clips: int) -> float:
    """Dollars of ``clips`` avatar clips generated."""
    return float(clips * CLIP_SECONDS * PRICES["clip_per_second"])
