"""Plot push latency against connected subscribers from the fan-out results.

    python -m bench.plot            # reads bench/results/fanout.json

Draws p50 (solid) and p99 (dashed) broadcast latency for each server against the number
of subscribers, and writes ``docs/img/latency-vs-connections.png``. Run ``bench.fanout``
first.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib
import orjson

from bench.harness import REPO_ROOT, RESULTS_DIR

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after use("Agg"): the backend must be chosen first

OUTPUT = REPO_ROOT / "docs" / "img" / "latency-vs-connections.png"
COLOURS = {"companion": "tab:blue", "raw": "tab:green", "socketio": "tab:red"}
LABELS = {
    "companion": "companion server",
    "raw": "raw websockets + uvloop",
    "socketio": "python-socketio (ASGI, uvicorn)",
}


def plot(results: Path, output: Path) -> Path:
    rows = orjson.loads(results.read_bytes())["rows"]
    figure, axes = plt.subplots(figsize=(8, 4.8), dpi=120)
    for server in COLOURS:
        mine = sorted((r for r in rows if r["server"] == server), key=lambda r: r["subscribers"])
        if not mine:
            continue
        sizes = [r["subscribers"] for r in mine]
        axes.plot(
            sizes,
            [r["latency_ms"]["p50"] for r in mine],
            "o-",
            color=COLOURS[server],
            label=f"{LABELS[server]} p50",
        )
        axes.plot(
            sizes,
            [r["latency_ms"]["p99"] for r in mine],
            "s--",
            color=COLOURS[server],
            label=f"{LABELS[server]} p99",
        )
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("connected subscribers (one broadcast reaches all)")
    axes.set_ylabel("latency, server send → client receipt (ms)")
    axes.set_title("Broadcast latency vs connections (closed-loop rounds, 2 shared cores)")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=7, loc="upper left")
    figure.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output)
    plt.close(figure)
    return output


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results", type=Path, default=RESULTS_DIR / "fanout.json")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    print(plot(args.results, args.output))


if __name__ == "__main__":
    main()
