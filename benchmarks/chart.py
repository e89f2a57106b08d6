"""The README's chart: latency distributions per contender, and the payload-size sweep.

No untrusted input. Draws from the results dict alone (the CDF points each latency summary
keeps), with matplotlib's Agg backend, so it can be redrawn from a saved JSON file:

    python -m benchmarks.chart benchmarks/results/latest.json benchmarks/results/latency.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from handlerbox.benchmarks.machine import one_line

COLOURS = {"floor": "black", "mp_pool": "tab:orange", "executor": "tab:purple",
           "pebble": "tab:red", "handlerbox_sync": "tab:blue", "handlerbox_async": "tab:cyan",
           "floor_small_reply": "grey"}


def write_chart(result: dict[str, Any], path: Path) -> Path | None:
    """Write the PNG; None (nothing written) without matplotlib or latency results."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import NullFormatter
    except ImportError:
        return None
    contenders = result.get("latency", {}).get("contenders", {})
    if not contenders:
        return None
    sweep = result.get("sweep", {}).get("sizes", {})
    fig, axes = plt.subplots(1, 2 if sweep else 1, figsize=(13 if sweep else 8, 5.2),
                             squeeze=False)
    cdf = axes[0][0]
    for name, stats in contenders.items():
        points = [(q, us) for q, us in stats["cdf_us"] if 0 < q < 1]
        ratio = stats.get("ratio_to_floor")
        label = f"{stats['label']}: p50 {stats['p50_us']:.0f} us" + (
            f" ({ratio:.1f}x floor)" if ratio and name != "floor" else "")
        cdf.step([us for _, us in points], [q for q, _ in points], where="post", label=label,
                 color=COLOURS.get(name), linewidth=2 if name.startswith("handlerbox") else 1.3)
    cdf.set_xscale("log")
    cdf.set_yscale("logit")
    cdf.set_ylim(0.01, 0.999)
    ticks = [0.01, 0.1, 0.5, 0.9, 0.99, 0.999]
    cdf.set_yticks(ticks, [f"p{100 * q:g}" for q in ticks])
    cdf.yaxis.set_minor_formatter(NullFormatter())
    cdf.set_xlabel("latency of one call (us, log scale)")
    cdf.set_ylabel("percentile of calls")
    cdf.grid(True, which="major", color="#e4e4e4")
    cdf.grid(True, which="minor", axis="x", color="#f2f2f2")
    cdf.set_title(f"one dispatch, {result['latency']['payload_bytes']} B payload "
                  "(further left is faster; the tail is at the top)", fontsize=10)
    cdf.legend(loc="lower right", fontsize=8)
    if sweep:
        axis = axes[0][1]
        sizes = list(sweep.values())
        xs = [s["bytes"] for s in sizes]
        for name in ("floor", "floor_small_reply", "handlerbox_sync"):
            ys = [s["contenders"].get(name, {}).get("p50_us") for s in sizes]
            if all(y is not None for y in ys):
                label = next(s["contenders"][name]["label"] for s in sizes)
                axis.plot(xs, ys, marker="o", label=label, color=COLOURS.get(name))
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("payload (bytes, log scale)")
        axis.set_ylabel("p50 latency (us, log scale)")
        axis.set_title("payload size sweep")
        axis.grid(True, which="both", color="#eeeeee")
        axis.legend(fontsize=8)
    fig.suptitle(f"handlerbox vs the raw-pipe floor and peer pools; placement "
                 f"{result['placement']['name']}, N={result['workers']}\n"
                 f"{one_line(result['machine'])}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    written = write_chart(json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2]))
    print(written or "nothing to draw (no latency results, or no matplotlib)")
