"""How each simulated figure grows with N, as one SVG: ``python -m
bench.plot_simulation OUT.svg TABLE...``.

In: the saved output of ``python -m bench.network --simulate N`` for
several N (one file each).  Out: an SVG of small plots, one per row, N on a
log axis (hand-written SVG: no plotting library needed).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from bench.report import without_load_header

#: (row name prefix, plot title), in the order drawn.
PLOTTED = (
    ("N=", "seconds to target degree and one component"),
    ("latency p50 (ms)", "latency p50 (ms)"),
    ("latency p99 (ms)", "latency p99 (ms)"),
    ("mesh hops from origin per delivery, mean", "mesh hops per delivery, mean"),
    ("duplicates received per node per message", "duplicates per node per message"),
    ("origin upload per publish (frames)", "origin upload per publish (frames)"),
    ("network upload per message (bytes)", "network upload per message per node (B)"),
    ("churn: seconds to repair", "churn: seconds to repair (20% killed)"),
)
WIDTH, HEIGHT, COLUMNS = 300, 190, 4


def figures(text: str) -> tuple[int, dict[str, float]]:
    """N and the figures by plotted title, from one run's output."""
    count, found = 0, {}
    for line in without_load_header(text).splitlines():
        name = line.split("  ")[0]
        rest = line[len(name) :].split()
        if name.startswith("N=") and rest:
            count = int(name[2:].split(":")[0])
        for prefix, title in PLOTTED:
            if name.startswith(prefix) and rest:
                found[title] = float(rest[0])
    if count and "network upload per message per node (B)" in found:
        found["network upload per message per node (B)"] /= count
    return count, found


def svg(runs: list[tuple[int, dict[str, float]]]) -> str:
    runs = sorted(runs)
    rows = math.ceil(len(PLOTTED) / COLUMNS)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH * COLUMNS}"'
        f' height="{HEIGHT * rows}" font-family="sans-serif" font-size="11">',
        '<rect width="100%" height="100%" fill="white"/>',
    ]
    xs = [n for n, _ in runs]
    low, high = math.log10(min(xs)), math.log10(max(xs))
    for k, (_, title) in enumerate(PLOTTED):
        left, top = (k % COLUMNS) * WIDTH + 45, (k // COLUMNS) * HEIGHT + 25
        w, h = WIDTH - 60, HEIGHT - 60
        points = [
            (n, f[title]) for n, f in runs if math.isfinite(f.get(title, math.nan))
        ]
        top_y = max([y for _, y in points] + [1e-9]) * 1.15
        out.append(f'<text x="{left}" y="{top - 8}" font-weight="bold">{title}</text>')
        out.append(
            f'<rect x="{left}" y="{top}" width="{w}" height="{h}"'
            ' fill="none" stroke="#999"/>'
        )
        for tick in (0, 0.5, 1):
            y = top + h - tick * h
            out.append(
                f'<text x="{left - 4}" y="{y + 4}" text-anchor="end">'
                f"{_short(tick * top_y)}</text>"
            )
        for n in xs:
            x = left + (0 if high == low else (math.log10(n) - low) / (high - low) * w)
            out.append(
                f'<text x="{x}" y="{top + h + 14}" text-anchor="middle">{n:,}</text>'
            )
        coords = [
            (
                left + (0 if high == low else (math.log10(n) - low) / (high - low) * w),
                top + h - y / top_y * h,
                y,
            )
            for n, y in points
        ]
        if coords:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y, _ in coords)
            out.append(
                f'<polyline points="{path}" fill="none" stroke="#1f77b4"'
                ' stroke-width="2"/>'
            )
        for x, y, value in coords:
            out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="#1f77b4"/>')
            out.append(
                f'<text x="{x:.1f}" y="{y - 6:.1f}" text-anchor="middle"'
                f' fill="#333">{_short(value)}</text>'
            )
        out.append(
            f'<text x="{left + w / 2}" y="{top + h + 28}" text-anchor="middle"'
            ' fill="#555">nodes (log scale)</text>'
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _short(value: float) -> str:
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        raise SystemExit("usage: python -m bench.plot_simulation OUT.svg TABLE...")
    runs = [figures(Path(name).read_text()) for name in argv[1:]]
    Path(argv[0]).write_text(svg(runs))
    print(f"wrote {argv[0]}")


if __name__ == "__main__":
    main(sys.argv[1:])
