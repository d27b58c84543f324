"""The run's table (printed), docs/benchmarks.md (bench/report_template.md filled in) and docs/benchmarks.png.

`python -m bench.report FILE` writes the docs again from a run's BENCH_RESULTS_JSON, e.g. after editing analysis.md.
"""

import datetime
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.results import CONCURRENCY, OPEN_WINDOW, THROTTLE, Config, Results

HERE = Path(__file__).resolve().parent
HEADER = ["measurement", "Django + API", "raw SDK", "ratio", "target", "result"]


@dataclass
class Row:
    label: str
    unit: str
    api: float | None
    raw: float | None
    ratio: float | None = None
    target: str = ""
    status: str = ""
    raw_note: str = ""


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _check(value: float | None, ok: Callable[[float], bool]) -> str:
    return "" if value is None else "PASS" if ok(value) else "MISS"


def rows(config: Config, results: Results) -> list[Row]:
    f = results.figures
    out: list[Row] = []

    def pair(label: str, unit: str, key: str, target: str = "", ok: Callable[[float], bool] | None = None) -> None:
        api, raw = f.get(f"{key}_api"), f.get(f"{key}_raw")
        ratio = _ratio(api, raw)
        out.append(Row(label, unit, api, raw, ratio, target, _check(ratio, ok) if ok else ""))

    pair("1 start latency p50, sequential", "ms", "start_p50", "API <= 1.5x raw", lambda r: r <= 1.5)
    pair("  start latency p95, sequential", "ms", "start_p95")
    pair(
        f"2 start throughput, {CONCURRENCY} clients", "sessions/s", "start_tput", "API >= 0.7x raw", lambda r: r >= 0.7
    )
    pair(f"3 end to end, {CONCURRENCY} clients (start -> row)", "sessions/s", "e2e_tput", "API >= 0.8x raw",
         lambda r: r >= 0.8)  # fmt: skip
    pair("4 message round trip p50", "ms", "msg_p50", "API <= 1.5x raw", lambda r: r <= 1.5)
    pair("  message round trip p95", "ms", "msg_p95")
    bottom, top = config.levels[0], config.levels[-1]
    held = {level: int(f.get(f"open_{level}", level)) for level in config.levels}
    for level in config.levels:
        api, raw = f.get(f"rss_{level}_api"), f.get(f"rss_{level}_raw")
        raw_open = int(f.get(f"raw_open_{level}", level))
        note = f" ({raw_open:,} open)" if raw_open != held[level] else ""
        target, status = ("<= 300 MB", _check(api, lambda mb: mb <= 300)) if level == top else ("", "")
        ratio = None if note else _ratio(api, raw)
        out.append(Row(f"5 worker RSS, {held[level]:,} sessions open", "MB", api, raw, ratio, target, status, note))
    for level in config.levels:
        pair(f"5 message p50, {held[level]:,} sessions open", "ms", f"msg_{level}")
    growth = _ratio(f.get(f"msg_{top}_api"), f.get(f"msg_{bottom}_api"))
    raw_growth = _ratio(f.get(f"msg_{top}_raw"), f.get(f"msg_{bottom}_raw"))
    out.append(Row(f"5 message p50 at {held[top]:,} / at {held[bottom]:,} open", "x", growth, raw_growth, None,
                   f"<= 2x its value at {held[bottom]:,}", _check(growth, lambda g: g <= 2)))  # fmt: skip
    django, raw = f.get("connect_django_ms"), f.get("connect_raw_ms")
    out.append(Row("  new DB connection + SELECT 1 (CONN_MAX_AGE=0)", "ms", django, raw, _ratio(django, raw)))
    wall = results.wall
    out.append(Row("  wall time of the whole run", "s", wall, None, None, "<= 600 s", _check(wall, lambda s: s <= 600)))
    return out


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "x":
        return f"{value:.2f}x"
    number = f"{value:,.0f}" if unit in ("sessions/s", "MB", "s") or value >= 100 else f"{value:.1f}"
    return f"{number} {unit}"


def _cells(row: Row) -> list[str]:
    ratio = f"{row.ratio:.2f}x" if row.ratio is not None else ""
    return [row.label, _fmt(row.api, row.unit), _fmt(row.raw, row.unit) + row.raw_note, ratio, row.target, row.status]


def table(all_rows: list[Row]) -> str:
    cells = [HEADER, *(_cells(r) for r in all_rows)]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADER))]
    lines = [
        "  ".join([c[0].ljust(widths[0]), *(v.rjust(w) for v, w in zip(c[1:], widths[1:], strict=True))]) for c in cells
    ]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def markdown_table(all_rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "|".join(["---", *["---:"] * 4, ":---:"]) + "|"]
    for row in all_rows:
        c = _cells(row)
        c[0], c[5] = c[0].strip(), f"**{c[5]}**" if c[5] == "MISS" else c[5]
        lines.append("| " + " | ".join(v.replace("<=", "≤").replace(">=", "≥").replace("->", "→") for v in c) + " |")
    return "\n".join(lines)


def cpu_table(results: Results) -> str:
    if not results.cpu:
        return ""
    names = list(next(iter(results.cpu.values())))
    lines = ["| phase | " + " | ".join(names) + " | total |", "|---|" + "---:|" * (len(names) + 1)]
    for phase, per in results.cpu.items():
        lines.append(f"| {phase} | " + " | ".join(f"{per[p]:.1f}" for p in names) + f" | {sum(per.values()):.1f} |")
    return "\n".join(lines)


def chart(config: Config, results: Results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f, levels = results.figures, config.levels
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    colors = {"api": "#1f77b4", "raw": "#ff7f0e"}
    labels = {"api": "Django + API", "raw": "raw SDK"}

    def bars(ax: plt.Axes, groups: list[tuple[str, str]], unit: str, title: str) -> None:
        for j, side in enumerate(("api", "raw")):
            xs = [i + (j - 0.5) * 0.38 for i in range(len(groups))]
            drawn = ax.bar(xs, [f.get(f"{key}_{side}", 0) for _, key in groups], 0.38, label=labels[side],
                           color=colors[side])  # fmt: skip
            ax.bar_label(drawn, fmt="%.1f" if unit == "ms" else "%.0f", fontsize=8)
        ax.set_xticks(range(len(groups)), [g for g, _ in groups])
        ax.set(ylabel=unit, title=title)
        ax.legend()

    bars(axes[0][0], [("start p50", "start_p50"), ("start p95", "start_p95"), ("message p50", "msg_p50"),
                      ("message p95", "msg_p95")], "ms", "Latency, sequential (lower is better)")  # fmt: skip
    bars(axes[0][1], [("starts", "start_tput"), ("end to end", "e2e_tput")], "sessions/s",
         f"Throughput, {CONCURRENCY} clients (higher is better)")  # fmt: skip
    for side in ("api", "raw"):
        xs = levels if side == "api" else [f.get(f"raw_open_{n}", n) for n in levels]
        axes[1][0].plot(xs, [f.get(f"rss_{n}_{side}") for n in levels], "o-", label=labels[side] + " worker",
                        color=colors[side])  # fmt: skip
        axes[1][1].plot(levels, [f.get(f"msg_{n}_{side}") for n in levels], "o-", label=labels[side],
                        color=colors[side])  # fmt: skip
    axes[1][0].axhline(300, color="red", linestyle="--", label="target 300 MB")
    axes[1][0].set(title="Worker RSS with N idle sessions open", ylabel="MB")
    if base := f.get(f"msg_{levels[0]}_api"):
        axes[1][1].axhline(2 * base, color="red", linestyle="--", label=f"target: 2x p50 at {levels[0]:,}")
    axes[1][1].set(title="Message round trip p50 with N sessions open", ylabel="ms")
    for ax in axes[1]:
        ax.set(xscale="log", xlabel="sessions open at once")
        ax.set_ylim(bottom=0)
        ax.legend()
    fig.suptitle(f"make bench ({config.scale}), {datetime.date.today():%Y-%m-%d}: Django + Temporal vs the raw SDK")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(config: Config, results: Results, all_rows: list[Row]) -> None:
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    chart(config, results, out / "benchmarks.png")
    f, first, top = results.figures, config.levels[0], config.levels[-1]
    misses = [r.label.strip() for r in all_rows if r.status == "MISS"]
    e2e_worker_cpu = results.cpu.get("3 end to end, per session, api", {}).get("worker", 0)
    page = (HERE / "report_template.md").read_text().format(
        config=config, results=results, facts=results.facts, settings=results.settings, first=first, top=top,
        CONCURRENCY=CONCURRENCY, OPEN_WINDOW=OPEN_WINDOW, THROTTLE=THROTTLE,
        results_table=markdown_table(all_rows), facts_list="\n".join(f"- {k}: {v}" for k, v in results.facts.items()),
        missed=f"Targets missed in this run: {'; '.join(misses)}. See the analysis below." if misses
        else "Targets missed in this run: none.",
        cpu_table=cpu_table(results),
        worker_cores=f.get("e2e_tput_api", 0) * e2e_worker_cpu / 1000,  # sessions/s x CPU s per session
        f={"threads_top": f.get(f"threads_{top}_api", 0), "msg_top": f.get(f"msg_{top}_api", 0),
           "msg_first": f.get(f"msg_{first}_api", 0), "rss_top": f.get(f"rss_{top}_api", 0),
           "connect_django_ms": f.get("connect_django_ms", 0), "connect_raw_ms": f.get("connect_raw_ms", 0)},
    )  # fmt: skip
    analysis = (HERE / "analysis.md").read_text().strip()
    (out / "benchmarks.md").write_text(f"{page}\n## Analysis\n\n{analysis}\n")


def rerender(path: str) -> None:
    saved = json.loads(Path(path).read_text())
    config, results = Config(**saved["config"]), Results(**saved["results"])
    write(config, results, rows(config, results))


if __name__ == "__main__":
    rerender(sys.argv[1])
