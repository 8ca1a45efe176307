"""Medians, the ratios the project sets targets for (bench/README.md), the printed table and the JSON."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

LABELS = {
    "nginx": "nginx empty_gif",
    "bare": "bare Granian GIF",
    "edge_open": "edge /o (open pixel)",
    "edge_click": "edge /c (click, cached)",
}

# (name, numerator, denominator, at least): the targets table of bench/README.md.
RATIO_TARGETS = [
    ("edge /o vs bare Granian", "edge_open", "bare", 0.85),
    ("edge /o vs nginx", "edge_open", "nginx", 0.30),
    ("edge /c vs edge /o", "edge_click", "edge_open", 0.90),
]
LATENCY_CONNECTIONS = 4
LATENCY_TARGETS_US = [("p50", "p50_us", 300), ("p99", "p99_us", 1000)]


@dataclass
class Results:
    """Every wrk run, by (target, connections), in round order."""

    runs: dict[tuple[str, int], list[dict]] = field(default_factory=dict)

    def add(self, target: str, connections: int, result: dict) -> None:
        self.runs.setdefault((target, connections), []).append(result)

    def median(self, target: str, connections: int, key: str) -> float | None:
        values = [run[key] for run in self.runs.get((target, connections), [])]
        return statistics.median(values) if values else None

    def ratio_per_round(self, top: str, bottom: str, connections: int) -> list[float]:
        # Ratios are taken within a round (same minute, same machine state), then the median of those.
        pairs = zip(self.runs.get((top, connections), []), self.runs.get((bottom, connections), []), strict=False)
        return [a["rps"] / b["rps"] for a, b in pairs if b["rps"]]


def evaluate(results: Results, targets: list[str], connections: list[int]) -> dict:
    table = []
    for target in targets:
        for conns in connections:
            if (target, conns) not in results.runs:
                continue
            table.append(
                {
                    "target": target,
                    "label": LABELS[target],
                    "connections": conns,
                    "rps": results.median(target, conns, "rps"),
                    "p50_ms": results.median(target, conns, "p50_us") / 1000,
                    "p99_ms": results.median(target, conns, "p99_us") / 1000,
                    "rounds": len(results.runs[(target, conns)]),
                    "errors": sum(sum(run["errors"].values()) for run in results.runs[(target, conns)]),
                }
            )
    checks = []
    for name, top, bottom, at_least in RATIO_TARGETS:
        for conns in connections:
            per_round = results.ratio_per_round(top, bottom, conns)
            if not per_round:
                continue
            value = statistics.median(per_round)
            checks.append(
                {
                    "what": f"{name}, {conns} conns",
                    "kind": "ratio",
                    "value": round(value, 3),
                    "target": f">= {at_least:.2f}",
                    "met": value >= at_least,
                    "per_round": [round(r, 3) for r in per_round],
                }
            )
    latency_conns = LATENCY_CONNECTIONS if LATENCY_CONNECTIONS in connections else min(connections)
    for target in ("edge_open", "edge_click"):
        for label, key, limit_us in LATENCY_TARGETS_US:
            value = results.median(target, latency_conns, key)
            if value is None:
                continue
            checks.append(
                {
                    "what": f"{LABELS[target]} {label}, {latency_conns} conns",
                    "kind": "latency",
                    "value": round(value / 1000, 3),
                    "target": f"<= {limit_us / 1000:g} ms",
                    "met": value <= limit_us,
                    "per_round": [run[key] / 1000 for run in results.runs[(target, latency_conns)]],
                }
            )
    return {"table": table, "checks": checks}


def render(header: list[str], summary: dict, footer: list[str]) -> str:
    lines = [*header, ""]
    lines.append(f"{'target':<26}{'conns':>6}{'req/s':>11}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    lines.append("-" * 69)
    last = None
    for row in summary["table"]:
        if last is not None and row["target"] != last:
            lines.append("")
        last = row["target"]
        lines.append(
            f"{row['label']:<26}{row['connections']:>6}{row['rps']:>11,.0f}"
            f"{row['p50_ms']:>9.3f}{row['p99_ms']:>9.3f}{row['errors']:>8}"
        )
    lines += ["", "Targets (bench/README.md; ratio = median of the per-round ratios)"]
    lines.append(f"{'what':<44}{'value':>9}  {'target':<11}{'':<7}per round")
    lines.append("-" * 90)
    for check in summary["checks"]:
        value = f"{check['value']:.2f}x" if check["kind"] == "ratio" else f"{check['value']:.3f}"
        rounds = " ".join(f"{r:.2f}" if check["kind"] == "ratio" else f"{r:.3f}" for r in check["per_round"])
        verdict = "met" if check["met"] else "MISSED"
        lines.append(f"{check['what']:<44}{value:>9}  {check['target']:<11}{verdict:<7}{rounds}")
    met = sum(check["met"] for check in summary["checks"])
    lines.append(f"{met} of {len(summary['checks'])} targets met")
    if footer:
        lines += ["", *footer]
    return "\n".join(lines)
