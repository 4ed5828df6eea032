"""The clone benchmark's results table and verdict."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from bench.clone_peers.tools import Tool
from bench.common.units import MiB, mib

TARGET_SPEEDUP = 1.5
TARGET_RSS_MIB = 200.0


@dataclass
class Outcome:
    """What one run of one tool did."""

    tool: str
    seconds: float
    ok: bool
    error: str = ""
    rss_mib: float = 0.0
    dest_allocated: int = 0
    content_ok: bool = False
    cpu: dict[str, float] = field(default_factory=dict)
    busy: float = 0.0
    busy_before: float = 0.0
    capped: bool = False
    note: str = ""


def summarise(
    tools: list[Tool], outcomes: list[Outcome], allocated: int, runs: int
) -> tuple[str, list[str]]:
    """(Markdown table, verdict lines)."""
    rows = [
        "| tool | runs ok | best s | median s | best MiB/s | median MiB/s | dest. allocation "
        "(source = 100 %) | client peak RSS MiB (max) | content = source | CPU s (median run) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    medians: dict[str, float] = {}
    bests: dict[str, float] = {}
    rss: dict[str, float] = {}
    for tool in tools:
        mine = [o for o in outcomes if o.tool == tool.name]
        good = [o for o in mine if o.ok]
        stopped = [o for o in mine if o.capped]
        if stopped and not good:
            cap = stopped[0].seconds
            medians[tool.name] = bests[tool.name] = cap
            cpu = ", ".join(
                f"{k} {v:.1f}"
                for k, v in sorted(stopped[0].cpu.items(), key=lambda kv: -kv[1])
                if v >= 0.3
            )
            rows.append(
                f"| {tool.label} | stopped at the cap | > {cap:.0f} | > {cap:.0f} | "
                f"< {allocated / MiB / cap:.0f} | < {allocated / MiB / cap:.0f} | "
                f"(not finished) | {stopped[0].rss_mib:.0f} | - | {cpu} "
                f"(machine busy {100 * stopped[0].busy:.0f} %) |"
            )
            continue
        if not good:
            err = mine[0].error if mine else "not run"
            rows.append(f"| {tool.label} | 0/{len(mine)} | failed: {err} | | | | | | | |")
            continue
        times = sorted(o.seconds for o in good)
        best, med = times[0], statistics.median(times)
        bests[tool.name], medians[tool.name] = best, med
        rss[tool.name] = max(o.rss_mib for o in good)
        mid = sorted(good, key=lambda o: o.seconds)[(len(good) - 1) // 2]
        cpu = ", ".join(
            f"{k} {v:.1f}" for k, v in sorted(mid.cpu.items(), key=lambda kv: -kv[1]) if v >= 0.3
        )
        allocs = {
            f"{mib(o.dest_allocated)} MiB ({100 * o.dest_allocated / allocated:.0f} %)"
            for o in good
        }
        alloc = " / ".join(sorted(allocs))
        content = "yes" if all(o.content_ok for o in good) else "**NO**"
        rows.append(
            f"| {tool.label} | {len(good)}/{len(mine)} | {best:.1f} | {med:.1f} | "
            f"{allocated / MiB / best:.0f} | {allocated / MiB / med:.0f} | {alloc} | "
            f"{rss[tool.name]:.0f} | {content} | {cpu} (machine busy {100 * mid.busy:.0f} %) |"
        )
    verdict: list[str] = []
    peers = {k: v for k, v in medians.items() if not k.startswith("kvm-clone")}
    peer_best = {k: v for k, v in bests.items() if not k.startswith("kvm-clone")}
    if peers:
        fastest = min(peers, key=lambda k: peers[k])
        fastest_b = min(peer_best, key=lambda k: peer_best[k])
        for name in ("kvm-clone relay", "kvm-clone direct"):
            if name not in {t.name for t in tools}:
                continue
            if name not in medians:
                verdict.append(f"{name}: no successful run")
                continue
            sp_med = peers[fastest] / medians[name]
            sp_best = peer_best[fastest_b] / bests[name]
            verdict.append(
                f"{name}: {sp_med:.2f}x the fastest peer by median ({fastest}), "
                f"{sp_best:.2f}x by best ({fastest_b}): target {TARGET_SPEEDUP}x "
                f"{'met' if min(sp_med, sp_best) >= TARGET_SPEEDUP else 'MISSED'}; "
                f"client RSS {rss[name]:.0f} MiB: target < {TARGET_RSS_MIB:.0f} "
                f"{'met' if rss[name] < TARGET_RSS_MIB else 'MISSED'}"
            )
    return "\n".join(rows), verdict
