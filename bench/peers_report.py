"""Tables, targets, the profile summary and the chart of bench/bench_peers.py (no processes here)."""

from __future__ import annotations

import re
import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

GiB = 2**30


@dataclass(frozen=True, slots=True)
class Stat:
    """One bounded run of one peer at one concurrency."""

    rate: float     # completed requests per second
    p50: float      # ms
    p99: float      # ms
    cpu: float      # server process tree CPU seconds per completed request
    rss: int        # peak resident bytes of the server process tree during the run
    n: int          # completed requests
    errors: int
    client_cpu: float  # load generator CPU seconds per request (loadgen.py only)


class PeerLike(Protocol):
    name: str
    kind: str
    runs: dict[int, list[Stat]]


def med(peer: PeerLike, c: int, attr: str) -> float:
    runs = peer.runs.get(c, [])
    return statistics.median(getattr(s, attr) for s in runs) if runs else float("nan")


def _find(peers: list[Any], start: str) -> Any:
    return next(p for p in peers if p.name.startswith(start))


def _results(peers: list[Any], concs: tuple[int, ...]) -> list[str]:
    lines = ["| peer | c | req/s median (min-max) | p50 ms | p99 ms | CPU ms/req | peak RSS MiB | n |",
             "|---|---|---|---|---|---|---|---|"]
    for peer in peers:
        for c in concs:
            runs = peer.runs.get(c)
            if not runs:
                continue
            rates = [s.rate for s in runs]
            cpu = med(peer, c, "cpu") * 1000
            label = f"{c} ({min(c, 2)} thr)" if peer.kind == "floor" else str(c)
            errors = sum(s.errors for s in runs)
            lines.append(
                f"| {peer.name} | {label} | {statistics.median(rates):,.1f} "
                f"({min(rates):,.1f}-{max(rates):,.1f}) | {med(peer, c, 'p50'):.1f} | "
                f"{med(peer, c, 'p99'):.1f} | {cpu:.3f} | {max(s.rss for s in runs) / 2**20:.0f} | "
                f"{sum(s.n for s in runs)}{f' ({errors} errors)' if errors else ''} |")
    return lines


def _verdict(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def targets(peers: list[Any], concs: tuple[int, ...], rss_peak: int) -> list[str]:
    face, centre = _find(peers, "preview-proxy face"), _find(peers, "preview-proxy centre")
    thumbor = _find(peers, "thumbor")
    sharp_a, sharp_c = _find(peers, "sharp 0.34 att"), _find(peers, "sharp 0.34 cen")
    floor_f, floor_c = _find(peers, "floor: raw pyvips + YuNet"), _find(peers, "floor: raw pyvips centre")
    bare, cached = _find(peers, "bare aiohttp"), _find(peers, "preview-proxy cached")
    plain, gen = _find(peers, "nginx plain"), _find(peers, "nginx generated")
    loaded = [c for c in concs if c >= 8]

    def ratios(a: Any, b: Any, cs: list[int]) -> dict[int, float]:
        return {c: med(a, c, "rate") / med(b, c, "rate") for c in cs}

    def fmt(r: dict[int, float]) -> str:
        return ", ".join(f"c{c}: {v:.2f}x" for c, v in r.items())

    rows = ["| target | figures (medians, same run) | verdict (at c>=8) |", "|---|---|---|"]
    r = ratios(face, thumbor, list(concs))
    rows.append(f"| face-aware cold >= 10x thumbor smart | {fmt(r)} | "
                f"{_verdict(all(r[c] >= 10 for c in loaded))} |")
    r = ratios(face, sharp_a, list(concs))
    rc = ratios(face, sharp_c, list(concs))
    rows.append(f"| face-aware cold >= sharp attention (and centre) | attention {fmt(r)}; "
                f"centre {fmt(rc)} | {_verdict(all(r[c] >= 1 for c in loaded))} "
                f"(centre: {_verdict(all(rc[c] >= 1 for c in loaded))}) |")
    for ours, floor, limit, label in ((face, floor_f, 1.3, "face-aware within 1.3x of raw pyvips+YuNet"),
                                      (centre, floor_c, 1.2, "centre crop within 1.2x of raw pyvips")):
        t = {c: med(floor, c, "rate") / med(ours, c, "rate") for c in (1, 8)}
        cpu = {c: med(ours, c, "cpu") / med(floor, c, "cpu") for c in (1, 8)}
        rows.append(f"| {label} | time per render (floor rate / ours): {fmt(t)}; "
                    f"CPU per render: {fmt(cpu)} | {_verdict(t[8] <= limit)} "
                    f"(CPU: {_verdict(cpu[8] <= limit)}) |")
    r = ratios(cached, bare, list(concs))
    p99 = {c: med(cached, c, "p99") for c in concs}
    rows.append(f"| cached 302 >= 0.5x bare aiohttp 302, p99 < 5 ms | {fmt(r)}; p99 "
                + ", ".join(f"c{c}: {v:.2f} ms" for c, v in p99.items())
                + f" | {_verdict(all(r[c] >= 0.5 and p99[c] < 5 for c in loaded))} |")
    r = ratios(gen, plain, list(concs))
    rows.append(f"| nginx asset (generated conf) >= 0.9x plain nginx static | {fmt(r)} | "
                f"{_verdict(all(r[c] >= 0.9 for c in loaded))} |")
    rows.append(f"| peak RSS < 1 GiB, 32 concurrent cold 8.3 MP renders | {rss_peak / 2**20:.0f} MiB | "
                f"{_verdict(rss_peak < GiB)} |")
    return rows


def _frame(raw: str) -> str:
    m = re.match(r"(.*) \((.*?)(?::\d+)?\)$", raw.strip())
    if not m:
        return raw.strip()
    return f"{m.group(1)} ({Path(m.group(2)).name})"


def profile_table(raw: Path, top: int = 10) -> str:
    """The top frames of py-spy's raw (collapsed) stacks: self and inclusive share of the samples."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_frame(f) for f in stack.split(";")]
        total += n
        own[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    if not total:
        return "_py-spy recorded no samples._"
    lines = ["| frame (leaf Python frame; C code shows as its Python caller) | self % | inclusive % |",
             "|---|---|---|"]
    for name, n in own.most_common(top):
        lines.append(f"| `{name}` | {100 * n / total:.1f} | {100 * incl[name] / total:.1f} |")
    lines += ["", "| inclusive, service frames | % of samples |", "|---|---|"]
    service = re.compile(r"\((render|faces|pipeline|service|pool|cache|origin|files|middleware|app)\.py\)")
    ours = [(k, v) for k, v in incl.most_common() if service.search(k)]
    for name, n in ours[:top]:
        lines.append(f"| `{name}` | {100 * n / total:.1f} |")
    return "\n".join(lines) + f"\n\n{total} samples (non-idle threads, 200 Hz)."


def report(peers: list[Any], concs: tuple[int, ...], rounds: int, rss: Stat, prof: str,
           names: list[str], elapsed: float, quick: bool, cores: int) -> str:
    loadgen = [s.client_cpu for p in peers if p.kind == "cold" for runs in p.runs.values() for s in runs]
    lines = [
        f"Command: `.venv/bin/python bench/bench_peers.py{' --quick' if quick else ''}` "
        f"({elapsed / 60:.1f} min). One run on this {cores}-core machine, which is **shared and noisy** "
        f"(other engineers run tests at the same time): medians of {rounds} rounds, peers interleaved "
        "within each round; compare ratios within this run, not absolute numbers across runs.",
        "",
        f"Photos: {len(names)} (corpus photos/ 2.7, 8.3, 10 and 12 MP without the 99.6 MP one, and "
        "faces/*.jpg), one shuffled order for every peer; output 200 px square JPEG Q85 everywhere. "
        "Cold renders: every request of the service is a new file name (hard links), so each is a real "
        "render (detect, render, cache write, 302); thumbor (no storage, no result storage) and sharp "
        "(no cache) render every request. Driven by bench/loadgen.py (aiohttp, own process, in-flight "
        "requests waited for; its overhead: median "
        f"{statistics.median(loadgen) * 1000 if loadgen else float('nan'):.2f} ms CPU per request, on "
        "the same cores). Repeated URLs (302s, nginx) by wrk. CPU per request: the server process "
        "tree's utime+stime from /proc; RSS: the tree's summed VmRSS sampled every 50 ms. Floors run "
        "min(c, cores) threads in their own process (libvips cache off, 1 libvips thread per render, "
        "as the service). The service renders with optimize_coding JPEG (the floors do not).",
        "",
        *_results(peers, concs),
        "",
        "### Targets",
        "",
        *targets(peers, concs, rss.rss),
        "",
        f"Peak RSS run: 32 concurrent cold face-aware renders of sharp_gain-map.jpg (8.3 MP), "
        f"{rss.n} renders at {rss.rate:.1f}/s, p99 {rss.p99:.0f} ms (the service runs {cores} renders "
        "at once and queues the rest).",
        "",
        "![throughput and latency against concurrency per peer](peers.png)",
        "",
        "### Where the time goes (py-spy, face-aware service, cold, c=8)",
        "",
        prof,
        "",
        "Flame graph: bench/out/profile.svg (not committed).",
    ]
    return "\n".join(lines)


def chart(peers: list[Any], concs: tuple[int, ...], path: Path) -> None:
    """Throughput and latency (p50 solid, p99 dashed) against concurrency, one line per peer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_rate, ax_lat) = plt.subplots(1, 2, figsize=(10, 4.6), dpi=80)
    for i, peer in enumerate(peers):
        cs = [c for c in concs if peer.runs.get(c)]
        colour = f"C{i % 10}"
        style = ":" if peer.kind == "hot" else "-"
        ax_rate.plot(cs, [med(peer, c, "rate") for c in cs], style, marker="o", ms=3, color=colour,
                     label=peer.name)
        ax_lat.plot(cs, [med(peer, c, "p50") for c in cs], style, marker="o", ms=3, color=colour)
        ax_lat.plot(cs, [med(peer, c, "p99") for c in cs], "--", marker="x", ms=3, color=colour, lw=0.8)
    for ax, title in ((ax_rate, "requests/s (median, log)"), (ax_lat, "latency ms: p50 solid, p99 dashed")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(list(concs), [str(c) for c in concs])
        ax.set_xlabel("concurrency")
        ax.set_title(title, fontsize=9)
        ax.grid(True, which="both", lw=0.3)
    fig.legend(loc="lower center", ncol=3, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.2, 1, 1))
    fig.savefig(path, dpi=80)
    plt.close(fig)
