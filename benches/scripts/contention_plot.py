#!/usr/bin/env python3
"""Draws benches/contention.svg: completion time of N concurrent requests on a just-expired
token, per strategy, from criterion's output of `cargo bench --bench contention`.

    python3 benches/scripts/contention_plot.py [CRITERION_DIR] [OUT.svg]

CRITERION_DIR defaults to $CRITERION_HOME, else $CARGO_TARGET_DIR/criterion, else
target/criterion. It reads contention/<strategy>/<N>/new/estimates.json (the median) and
contention/calls.json (token-endpoint calls). No plotting library: the SVG is written by hand.
"""

import json
import math
import sys
from pathlib import Path

from criterion_home import criterion_dir

NS = [1, 100, 1000, 10000]
LATENCY_MS = 20.0
STRATEGIES = [
    # (criterion id, legend, colour, dashed)
    ("withings", "WithingsAuthLayer (single flight)", "#1f77b4", False),
    ("serial", "async mutex held across the refresh", "#ff7f0e", False),
    ("uncoordinated", "uncoordinated (every request refreshes)", "#d62728", False),
]


def median_ms(root, strategy, n):
    path = root / "contention" / strategy / str(n) / "new" / "estimates.json"
    try:
        with open(path) as f:
            return json.load(f)["median"]["point_estimate"] / 1e6
    except FileNotFoundError:
        return None


def main():
    root = criterion_dir()
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("benches/contention.svg")
    calls = {}
    calls_path = root / "contention" / "calls.json"
    if calls_path.exists():
        calls = json.loads(calls_path.read_text())

    series = {s: [(n, median_ms(root, s, n)) for n in NS] for s, *_ in STRATEGIES}
    valid = [(n, median_ms(root, "withings_valid", n)) for n in NS]
    goal = [(n, 1.2 * (LATENCY_MS + v)) for n, v in valid if v is not None]
    points = [v for pts in series.values() for _, v in pts if v is not None]
    points += [v for _, v in goal]
    if not points:
        sys.exit(f"no contention results under {root}; run `cargo bench --bench contention`")

    width, height = 820, 460
    left, right, top, bottom = 70, 310, 50, 60
    plot_w, plot_h = width - left - right, height - top - bottom
    y_max = max(points) * 1.1
    y_step = 20 if y_max <= 200 else 50
    y_max = math.ceil(y_max / y_step) * y_step

    def x(n):
        return left + plot_w * math.log10(n) / math.log10(NS[-1])

    def y(ms):
        return top + plot_h * (1 - ms / y_max)

    svg = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="24" font-size="15" font-weight="bold">'
        f"N concurrent requests on a just-expired token (token endpoint: {LATENCY_MS:.0f} ms)</text>",
    ]
    # Axes and grid.
    for ms in range(0, int(y_max) + 1, y_step):
        svg.append(
            f'<line x1="{left}" y1="{y(ms):.1f}" x2="{left + plot_w}" y2="{y(ms):.1f}" '
            f'stroke="#e5e5e5"/>'
        )
        svg.append(
            f'<text x="{left - 8}" y="{y(ms) + 4:.1f}" text-anchor="end">{ms}</text>'
        )
    for n in NS:
        svg.append(
            f'<line x1="{x(n):.1f}" y1="{top}" x2="{x(n):.1f}" y2="{top + plot_h}" '
            f'stroke="#e5e5e5"/>'
        )
        svg.append(
            f'<text x="{x(n):.1f}" y="{top + plot_h + 18}" text-anchor="middle">{n:,}</text>'
        )
    svg.append(
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" '
        f'stroke="#333"/>'
    )
    svg.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 18}" text-anchor="middle">'
        f"N concurrent requests (log scale)</text>"
    )
    svg.append(
        f'<text x="18" y="{top + plot_h / 2:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 18 {top + plot_h / 2:.1f})">time until all N answered (ms, median)</text>'
    )

    def polyline(pts, colour, dashed=False, marker=True):
        pts = [(n, v) for n, v in pts if v is not None]
        if not pts:
            return
        coords = " ".join(f"{x(n):.1f},{y(v):.1f}" for n, v in pts)
        dash = ' stroke-dasharray="6 4"' if dashed else ""
        svg.append(
            f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>'
        )
        if marker:
            for n, v in pts:
                svg.append(
                    f'<circle cx="{x(n):.1f}" cy="{y(v):.1f}" r="3.5" fill="{colour}"/>'
                )

    polyline(goal, "#2ca02c", dashed=True, marker=False)
    for strategy, _, colour, dashed in STRATEGIES:
        polyline(series[strategy], colour, dashed)

    # Token-endpoint calls next to each point of the uncoordinated and withings series.
    for strategy, dy in (("uncoordinated", -8), ("withings", 16)):
        for n, v in series[strategy]:
            c = calls.get(f"{strategy}/{n}")
            if v is None or c is None:
                continue
            label = str(c["max"]) if c["min"] == c["max"] else f'{c["min"]}-{c["max"]}'
            svg.append(
                f'<text x="{x(n) + 6:.1f}" y="{y(v) + dy:.1f}" font-size="10" fill="#555">'
                f"{label} call{'s' if label != '1' else ''}</text>"
            )

    # Legend.
    lx, ly = left + plot_w + 110, top + 10
    legend = [(label, colour, dashed) for _, label, colour, dashed in STRATEGIES]
    legend.append(("goal: 1.2 x (20 ms + same N, valid token)", "#2ca02c", True))
    for i, (label, colour, dashed) in enumerate(legend):
        yy = ly + i * 40
        dash = ' stroke-dasharray="6 4"' if dashed else ""
        svg.append(
            f'<line x1="{lx}" y1="{yy}" x2="{lx + 22}" y2="{yy}" stroke="{colour}" '
            f'stroke-width="2"{dash}/>'
        )
        words = label.split(" ")
        first, second = [], []
        for w in words:
            (first if len(" ".join(first + [w])) <= 26 and not second else second).append(w)
        svg.append(f'<text x="{lx + 28}" y="{yy + 4}">{" ".join(first)}</text>')
        if second:
            svg.append(f'<text x="{lx + 28}" y="{yy + 18}">{" ".join(second)}</text>')
    svg.append(
        f'<text x="{lx}" y="{ly + len(legend) * 40 + 6}" font-size="10" fill="#555">'
        f"labels: token-endpoint calls</text>"
    )
    svg.append("</svg>")

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(svg) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
