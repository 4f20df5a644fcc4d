"""Prices, and the report of bench.cost: dollars per user-month by service and tier.

:data:`PRICES` (:mod:`brain.prices`) is the one dated table of prices the benchmark and the
server's live cost view share; change it there. A
month is 30 days; frames are kept 30 days (``COMPANION_FRAME_RETENTION_DAYS``), so a
month's storage is 30 days of frames held at once.
"""

from __future__ import annotations

import math
import re
from typing import Any

from bench.harness import REPO_ROOT
from brain.prices import CLIP_SECONDS, PRICES

DAYS = 30
FRAME_ITEM_OVERHEAD = 100
"""Bytes DynamoDB bills per item for its index, on top of the item's own size."""

BEGIN, END = "<!-- cost:begin -->", "<!-- cost:end -->"


def per_month(per_day: float) -> float:
    """A day's figure as a 30-day month's."""
    return per_day * DAYS


def day_of(run: dict[str, Any], index: int = -1) -> dict[str, Any]:
    """The counters of one replayed day (the last by default: warm caches), as differences
    between the snapshots taken at the end of each day."""
    snapshots = run["snapshots"]
    end = snapshots[index]
    position = index % len(snapshots)
    start = snapshots[position - 1] if position > 0 else None

    def minus(now: Any, before: Any) -> Any:
        if isinstance(now, dict):
            return {
                k: minus(v, None if before is None else before.get(k, 0)) for k, v in now.items()
            }
        return now - (before or 0)

    return minus(end, start)  # type: ignore[no-any-return]


def one_item_per_frame(frames: int, item_bytes: int) -> dict[str, float]:
    """Today's layout, by the published rules: one item (one WRU) per frame."""
    units = math.ceil(item_bytes / 1024)
    writes = per_month(frames * units) * PRICES["dynamodb_wru_per_million"] / 1e6
    stored_gb = DAYS * frames * (item_bytes + FRAME_ITEM_OVERHEAD) / 1e9
    return {"writes": writes, "storage": stored_gb * PRICES["dynamodb_gb_month"]}


def dynamodb_month(run: dict[str, Any], table: str, days: int) -> dict[str, float]:
    """Dollars a month of one table: writes and reads of the last day, storage (a day's
    frames held 30 times over, the other tables as they are)."""
    day = day_of(run)
    writes = per_month(day["wru"][table]) * PRICES["dynamodb_wru_per_million"] / 1e6
    reads = per_month(day["rru"][table]) * PRICES["dynamodb_rru_per_million"] / 1e6
    held = run["stored"][table]["bytes"]
    stored = held / days * DAYS if table == "frames" else held
    return {"writes": writes, "reads": reads, "storage": stored / 1e9 * PRICES["dynamodb_gb_month"]}


def llm_month(mode: dict[str, Any]) -> float:
    """Dollars a month of the LLM in one mode (as the guard priced the day's calls)."""
    return float(per_month(mode["cost_usd"]))


def render(data: dict[str, Any]) -> str:
    """The Markdown report of one run of bench.cost."""
    lines = [
        f"Replayed {data['frames']:,} frames ({data['hours']:g} h at 1 Hz) a day, {data['days']}"
        f" days, in {_cadence(data)}; prices as of {PRICES['as_of']} ({PRICES['source']}).",
        "",
    ]
    for run in data["runs"]:
        lines += _store_section(run, data)
    lines += _llm_section(data)
    lines += _tier_section(data)
    return "\n".join(lines) + "\n"


def _cadence(data: dict[str, Any]) -> str:
    if data["upload_every_s"] == "bridge":
        return (
            f"the phone bridge's uploads ({data['uploads_per_day']:,} a day: one a minute,"
            f" {data['spike_uploads_per_day']} sent early by a spike)"
        )
    return f"uploads of {data['upload_every_s']} s of frames ({data['uploads_per_day']:,} a day)"


def avatar_days(run: dict[str, Any]) -> list[dict[str, float]]:
    """Each replayed day's changes of state, avatar cache hits and misses, generations and
    clips (the server's own counters, as differences between days)."""
    out = []
    for index in range(len(run["snapshots"])):
        day = day_of(run, index)
        out.append(
            {
                "changes": day["pushed"].get("state_changes", 0),
                "deltas": day["pushed"].get("delta", 0),
                "hits": day["avatar_cache"]["hit"],
                "misses": day["avatar_cache"]["miss"],
                "generations": day["avatar_generations"],
                "clips": day.get("avatar_clips", 0),
            }
        )
    return out


def avatar_dollars(generations: float, clips: float) -> float:
    """Dollars of avatar images and clips generated (a cache hit costs nothing)."""
    clip = PRICES["clip_per_second"] * CLIP_SECONDS
    return generations * PRICES["image_per_generation"] + clips * clip


def _ratio(part: float, whole: float) -> str:
    return f"{part / whole:.2f}" if whole else "n/a"


def _avatar_lines(run: dict[str, Any]) -> list[str]:
    days = avatar_days(run)
    last = days[-1]
    total = {key: sum(day[key] for day in days) for key in last}
    warm = days[1:] or days
    warm_total = {key: sum(day[key] for day in warm) for key in last}
    lines = [
        "",
        "| day | changes of state | deltas | cache hits | generations | clips"
        " | generations per change | $ images + clips |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for number, day in enumerate(days, 1):
        lines.append(
            f"| {number} | {day['changes']:g} | {day['deltas']:g} | {day['hits']:g}"
            f" | {day['generations']:g} | {day['clips']:g}"
            f" | {_ratio(day['generations'], day['changes'])}"
            f" | {avatar_dollars(day['generations'], day['clips']):.3f} |"
        )
    lines += [
        "",
        f"Avatar generations per change of state: **{_ratio(last['generations'], last['changes'])}"
        f"** on the last day, {_ratio(warm_total['generations'], warm_total['changes'])} over"
        f" the days after the first (warm cache), {_ratio(total['generations'], total['changes'])}"
        f" over all {len(days)} days ({total['generations']:g} generations, {total['hits']:g}"
        f" cache hits, for {total['changes']:g} changes of state);"
        f" images ${PRICES['image_per_generation']} each, clips"
        f" ${PRICES['clip_per_second'] * CLIP_SECONDS:.2f} each ({CLIP_SECONDS} s).",
        "",
    ]
    return lines


def _store_section(run: dict[str, Any], data: dict[str, Any]) -> list[str]:
    day = day_of(run)
    days, frames = data["days"], data["frames"]
    pushed = day["pushed"]
    changes = pushed.get("state_changes", 0)
    lines = [
        f"### {run['store']}",
        "",
        f"- replay: {run['replay_s']} s for {run['uploads']} uploads ({days} days);"
        f" the last day {day.get('analyses', 0):g} analyses, and {pushed.get('bytes', 0):,}"
        f" bytes pushed to one watch in {pushed.get('delta', 0)} deltas ({changes} changes"
        " of state)",
        f"- avatar images {run['media_bytes']:,} bytes in all (embedded media: 0 S3"
        " requests); day by day:",
        *_avatar_lines(run),
    ]
    if run["store"] == "sqlite":
        lines.append(
            f"- frames: {run['frame_rows']} rows for {days} days,"
            f" {run['frame_payload_bytes']:,} payload bytes"
            f" ({run['frame_payload_bytes'] / frames / days:.1f} bytes a frame);"
            f" file after VACUUM {run['file_bytes']:,} bytes"
        )
        return [*lines, ""]
    frames_month = dynamodb_month(run, "frames", days)
    stored = run["stored"]["frames"]
    wru, rru = day["wru"], day["rru"]
    lines += [
        f"- frames: {stored['items'] / days:g} items a day,"
        f" {stored['bytes'] / frames / days:.1f} bytes billed a frame (with the per-item"
        f" overhead); {wru['frames']:g} WRU and {rru['frames']:g} RRU a day"
        f" ({frames / max(wru['frames'], 1):.0f} frames per WRU)",
        "",
        "| table | WRU/day | RRU/day | items | bytes | $/month writes | reads | storage |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for table in wru:
        month = dynamodb_month(run, table, days)
        lines.append(
            f"| {table} | {wru[table]:g} | {rru[table]:g}"
            f" | {run['stored'][table]['items']} | {run['stored'][table]['bytes']:,}"
            f" | {month['writes']:.4f} | {month['reads']:.4f} | {month['storage']:.4f} |"
        )
    before = one_item_per_frame(frames, data["old_item_bytes"])
    lines += [
        "",
        f"Frames, $/user-month: **{sum(frames_month.values()):.4f}** (writes"
        f" {frames_month['writes']:.4f}, reads {frames_month['reads']:.4f}, storage"
        f" {frames_month['storage']:.4f}); one item per frame ({data['old_item_bytes']} bytes"
        f" each), by the same rules: {sum(before.values()):.4f} (writes"
        f" {before['writes']:.4f}, storage {before['storage']:.4f}).",
        "",
    ]
    return lines


def _llm_section(data: dict[str, Any]) -> list[str]:
    lines = [
        "### LLM (Claude Haiku 4.5, through brain against the fake API)",
        "",
        "| mode | windows | calls | changes of state | input | output | cache write"
        " | cache read | $/day | $/month |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, mode in data["llm"].items():
        lines.append(
            f"| {name} | {mode['windows']} | {mode['calls']} | {mode['state_changes']}"
            f" | {mode['input_tokens']:,} | {mode['output_tokens']:,}"
            f" | {mode['cache_write_tokens']:,} | {mode['cache_read_tokens']:,}"
            f" | {mode['cost_usd']:.4f} | {llm_month(mode):.3f} |"
        )
    return [*lines, ""]


def _tier_section(data: dict[str, Any]) -> list[str]:
    dynamo = next((run for run in data["runs"] if run["store"] == "dynamodb"), None)
    any_run = dynamo or (data["runs"][0] if data["runs"] else None)
    lines = [
        "### $/user-month by tier (DynamoDB store, embedded media, S3 $0)",
        "",
        "| tier | DynamoDB | LLM | images and clips | pushed bytes | total |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    store_month = 0.0
    if dynamo is not None:
        store_month = sum(
            sum(dynamodb_month(dynamo, table, data["days"]).values())
            for table in day_of(dynamo)["wru"]
        )
    day = day_of(any_run) if any_run else {"avatar_generations": 0, "pushed": {}}
    images_month = per_month(avatar_dollars(day["avatar_generations"], day.get("avatar_clips", 0)))
    egress = per_month(day["pushed"].get("bytes", 0))
    egress_month = egress / 1e9 * PRICES["egress_per_gb"]
    for tier in ("free", "premium"):
        llm = llm_month(data["llm"][tier])
        total = store_month + llm + images_month + egress_month
        lines.append(
            f"| {tier} | {store_month:.4f} | {llm:.4f} | {images_month:.4f}"
            f" | {egress_month:.6f} | **{total:.4f}** |"
        )
    first = day_of(any_run, 0) if any_run else {"avatar_generations": 0}
    warm_up = avatar_dollars(first["avatar_generations"], first.get("avatar_clips", 0))
    lines += [
        "",
        "Images and clips: this user's last day (warm cache) times 30. The first day's"
        f" generations (cold cache: {first['avatar_generations']:g} images and"
        f" {first.get('avatar_clips', 0):g} clips, ${warm_up:.2f}) are paid once per"
        " deployment and shared by every user whose avatar prompt is the same, so they are"
        " not a monthly cost of one user.",
        "",
    ]
    return lines


def write_page(markdown: str) -> str:
    """Put ``markdown`` between the markers of docs/cost.md; return the page's path."""
    page = REPO_ROOT / "docs" / "cost.md"
    text = page.read_text()
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.DOTALL)
    if not pattern.search(text):
        raise SystemExit(f"{page} has no {BEGIN} ... {END} section to fill")
    page.write_text(pattern.sub(lambda _: f"{BEGIN}\n{markdown.strip()}\n{END}", text))
    return str(page)
