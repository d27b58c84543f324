"""The run's table (printed), docs/benchmarks.md (bench/report_template.md filled in) and docs/benchmarks.png.

`python -m bench.report FILE` writes the docs again from a run's BENCH_RESULTS_JSON, e.g. after editing analysis.md.
"""

import datetime
import json
import re
import sys
from pathlib import Path

from bench.phases.streams import IDLE_SECONDS
from bench.results import CONCURRENCY, OPEN_WINDOW, PROFILES, THROTTLE, WALL_LIMIT, Config, Results

HERE = Path(__file__).resolve().parent
SIDES = {"api": "Django + API", "raw": "raw SDK"}
PEER = "FastAPI peer"
FULL_TOP = PROFILES["full"]["levels"][-1]  # the scale level the worker's RSS target is set for
# The API beside its peer (bench.fastapi_peer) and the raw SDK: label, unit, figure, targets (API / peer, API / raw).
# The web path's targets are issue 21's (round three); the API / raw ones of round one are in the last table.
PEER_LINES = [
    ("1 start p50, back to back", "ms", "start_p50", "", "≤ 1.5"),
    ("1b start p50, spaced 60 ms apart", "ms", "spaced_p50", "≤ 1.1", "≤ 1.3"),
    ("1b web process CPU per start", "ms", "webcpu", "≤ 1.2", ""),
    (f"2 start throughput, {CONCURRENCY} clients", "sessions/s", "start_tput", "≥ 1.0", ""),
    ("4 message round trip p50", "ms", "msg_p50", "≤ 1.1", ""),
    ("4 web process CPU per message", "ms", "webcpu_msg", "≤ 1.2", ""),
    ("6 first message (update-with-start) p50", "ms", "first_p50", "", "≤ 1.2"),
]
# The lines comparing one figure of both sides: label, unit, figure (its _api and _raw), the target's API / raw bound
PAIRS = [
    ("1 start latency p50, sequential", "ms", "start_p50", "≤ 1.5"),
    ("  start latency p95, sequential", "ms", "start_p95", ""),
    (f"2 start throughput, {CONCURRENCY} clients", "sessions/s", "start_tput", "≥ 0.7"),
    (f"3 end to end, {CONCURRENCY} clients (start → row)", "sessions/s", "e2e_tput", "≥ 0.8"),
    ("4 message round trip p50", "ms", "msg_p50", "≤ 1.5"),
    ("  message round trip p95", "ms", "msg_p95", ""),
]


def table(header: list[str], body: list[list[str]]) -> str:
    """A Markdown table padded to read in a terminal too: the first column left-aligned, the others right."""
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join([cells[0].ljust(widths[0]), *map(str.rjust, cells[1:], widths[1:])]) + " |"

    rule = "|".join(["", "-" * (widths[0] + 2), *("-" * (w + 1) + ":" for w in widths[1:]), ""])
    return "\n".join([line(header), rule, *map(line, body)])


def amount(value: float | None, unit: str) -> str:
    if value is None:
        return "" if unit == "x" else "-"
    if unit == "x":
        return f"{value:.2f}x"
    return f"{value:,.0f} {unit}" if unit in ("sessions/s", "MB", "s") or value >= 100 else f"{value:.1f} {unit}"


def within(value: float, bound: str) -> bool:
    """Whether `value` meets a bound such as "≤ 1.5" or "≥ 0.7"."""
    op, limit = bound.split()
    return value <= float(limit) if op == "≤" else value >= float(limit)


def rows(config: Config, results: Results) -> list[list[str]]:
    """measurement, Django + API, raw SDK, ratio, target, result."""
    f, first, top = results.figures, config.levels[0], config.levels[-1]
    held = {level: f"{f[f'open_{level}']:,.0f}" for level in config.levels}
    out = []

    def row(
        label: str,
        unit: str,
        api: float,
        raw: float | None,
        ratio: float | None,
        target: str = "",
        ok: bool | None = None,
    ) -> None:
        result = "" if ok is None else "PASS" if ok else "MISS"
        out.append([label, amount(api, unit), amount(raw, unit), amount(ratio, "x"), target, result])

    for label, unit, key, bound in PAIRS:
        ratio = f[f"{key}_api"] / f[f"{key}_raw"]
        ok = within(ratio, bound) if bound else None
        row(label, unit, f[f"{key}_api"], f[f"{key}_raw"], ratio, bound and f"API {bound}x raw", ok)
    rss_at = "" if top == FULL_TOP else f" (set for {FULL_TOP:,})"
    for level in config.levels:
        api, raw, raw_held = f[f"rss_{level}_api"], f[f"rss_{level}_raw"], f"{f[f'raw_open_{level}']:,.0f}"
        target, ok = (f"≤ 300 MB{rss_at}", api <= 300) if level == top else ("", None)
        same = raw_held == held[level]  # a ratio only where both workers hold as many sessions
        row(f"5 worker RSS, {held[level]} sessions open", "MB", api, raw, api / raw if same else None, target, ok)
        out[-1][2] += "" if same else f" ({raw_held} open)"
    for level in config.levels:
        api, raw = f[f"msg_{level}_api"], f[f"msg_{level}_raw"]
        row(f"5 message p50, {held[level]} sessions open", "ms", api, raw, api / raw)
    api, raw = (f[f"msg_{top}_{side}"] / f[f"msg_{first}_{side}"] for side in SIDES)
    label = f"5 message p50 at {held[top]} / at {held[first]} open"
    row(label, "x", api, raw, None, f"≤ 2x its value at {held[first]}", api <= 2)
    django, raw = f["connect_django_ms"], f["connect_raw_ms"]
    row("  new DB connection + SELECT 1 (CONN_MAX_AGE=0)", "ms", django, raw, django / raw)
    limit = WALL_LIMIT[config.scale]
    row("  wall time of the whole run", "s", results.wall, None, None, f"≤ {limit} s", results.wall <= limit)
    return out


def peer_rows(results: Results) -> list[list[str]]:
    """measurement, Django + API, FastAPI peer, raw SDK, API / peer, API / raw, target, result."""
    f, out = results.figures, []
    for label, unit, key, peer_bound, raw_bound in PEER_LINES:
        api, peer, raw = (f.get(f"{key}_{side}") for side in ("api", "fastapi", "raw"))
        if api is None or peer is None:
            continue
        by_peer, by_raw = api / peer, (api / raw if raw else None)
        checks = [(by_peer, peer_bound, "peer"), (by_raw, raw_bound, "raw")]
        met = [within(ratio, bound) for ratio, bound, _ in checks if bound and ratio is not None]
        target = ", ".join(f"{bound}x {name}" for _, bound, name in checks if bound)
        result = "" if not met else "PASS" if all(met) else "MISS"
        cells = [amount(api, unit), amount(peer, unit), amount(raw, unit), amount(by_peer, "x"), amount(by_raw, "x")]
        out.append([label, *cells, target, result])
    return out


# Line 7: its figures' key (ttft_<key>_*), label, and the overhead's bounds in ms (p50, p95).
FIRST_TOKEN_LINES = [
    ("1", "7 first token, 1 session", (50, None)),
    ("20", "7 first token, 20 sessions at once, one worker process", (150, 400)),
    ("20_two", "7 first token, 20 sessions at once, two worker processes", (150, 400)),
]


def first_token_rows(results: Results) -> list[list[str]]:
    """sessions at once, the model's own first token, through the project, the overhead p50 and p95, target, result."""
    f, out = results.figures, []
    for key, label, (p50, p95) in FIRST_TOKEN_LINES:
        if f"ttft_{key}_overhead_p50" not in f:
            continue
        cells = [amount(f[f"ttft_{key}_{k}"], "ms") for k in ("model_p50", "project_p50", "overhead_p50")]
        cells.append(amount(f[f"ttft_{key}_overhead_p95"], "ms"))
        met = f[f"ttft_{key}_overhead_p50"] <= p50 and (p95 is None or f[f"ttft_{key}_overhead_p95"] <= p95)
        target = f"overhead p50 ≤ {p50} ms" + (f", p95 ≤ {p95} ms" if p95 else "")
        if f"ttft_{key}_on_second" in f:
            label += f" ({f[f'ttft_{key}_on_second']:.0f} of {key.split('_')[0]} sessions on the second)"
        out.append([label, *cells, target, "PASS" if met else "MISS"])
    return out


TURN_CPU_TARGET = 25.0  # ms of the worker's CPU for the turn that answers a message
TOKEN_BARS = {"1": "1 session", "20": "20 at once", "20_two": "20 at once,\ntwo workers"}


def worker_rows(results: Results) -> list[list[str]]:
    """Line 8's worker CPU, the message's and the turn's, and what three workers would give: measurement, value,
    target, result."""
    f = results.figures
    if "turns_worker_cpu" not in f:
        return []
    n, both = f"{f['turns_n']:.0f}", f["turns_worker_cpu"]
    out = [[f"8 worker CPU per message and its turn, {n} at once", f"{both:.0f} ms", "", ""]]
    if "turns_turn_cpu" in f:
        turn, target = f["turns_turn_cpu"], f"≤ {TURN_CPU_TARGET:.0f} ms"
        result = "PASS" if turn <= TURN_CPU_TARGET else "MISS"
        out += [
            ["8 worker CPU per message (stored, its turn held back)", f"{f['turns_message_cpu']:.0f} ms", "", ""],
            ["8 worker CPU per turn (the first less the second)", f"{turn:.0f} ms", target, result],
        ]
    per_core = 1000 / both
    out.append(
        [
            "7 derived, not measured: three workers, a free core each",
            f"{3 * per_core:.0f} turns/s (3 x 1000 / {both:.0f} ms); 20 at once: {20 * both / 3:,.0f} ms CPU each",
            "",
            "",
        ]
    )
    return out


IDLE_CPU_TARGET = 5.0  # % of a core: "near zero" for a web server whose streams all wait


def history_marks(f: dict[str, float]) -> list[int]:
    """The turns line 9 measured (its figures history_<turn>)."""
    return sorted(int(k.removeprefix("history_")) for k in f if re.fullmatch(r"history_\d+", k))


def holding_rows(results: Results) -> list[list[str]]:
    """Lines 8 and 9: measurement, value, target, result."""
    f, out = results.figures, []

    def row(label: str, value: str, target: str = "", ok: bool | None = None) -> None:
        out.append([label, value, target, "" if ok is None else "PASS" if ok else "MISS"])

    if "streams_rss_per_stream_kb" in f:
        n, kb, idle = f"{f['streams_open']:,.0f}", f["streams_rss_per_stream_kb"], f["streams_idle_cpu"]
        row(f"8 {n} idle SSE clients: web memory per stream", f"{kb:.0f} KB", "≤ 100 KB", kb <= 100)
        cpu_target = f"≤ {IDLE_CPU_TARGET:.0f}%"
        row(f"8 {n} idle SSE clients: web CPU", f"{idle:.1f}% of a core", cpu_target, idle <= IDLE_CPU_TARGET)
        row(f"  {n} idle SSE clients: web server threads", f"{f['streams_threads']:,.0f}")
        if "streams_web_rss" in f:
            rss = f"{f['streams_web_rss']:,.0f} MB ({f['streams_web_rss_before']:,.0f} MB before they connected)"
            row(f"8 {n} idle SSE clients: web server RSS", rss)
    if "turns_n" in f:
        n, whole, ordered = (int(f[k]) for k in ("turns_n", "turns_whole", "turns_in_order"))
        good = f"{min(whole, ordered)} of {n}" + (
            f" ({f['turns_retried']:.0f} posts retried after a 503)" if f.get("turns_retried") else ""
        )
        row(f"8 {n} turns at once: replies whole, in order", good, "all", whole == ordered == n)
        delivery = f"{f['turns_delivery_p50']:.0f} / {f['turns_delivery_p95']:.0f} ms"
        row(f"  {n} turns at once: delta delivery p50 / p95 (append → client)", delivery)
    if marks := history_marks(f):
        sizes = " / ".join(f"{f[f'history_{m}']:,.0f}" for m in marks)
        at = " / ".join(f"{f[f'history_{m}_turn']:.0f}" for m in marks)
        flat = f[f"history_{marks[-1]}"] / f[f"history_{marks[0]}"]
        row(f"9 history bytes per turn, at turn {at}", f"{sizes} B ({flat:.2f}x)", "last ≤ 1.1x first", flat <= 1.1)
        if all(f"history_tool_{m}" in f for m in marks):
            tools = " / ".join(f"{f[f'history_tool_{m}']:,.0f}" for m in marks)
            tool_flat = f[f"history_tool_{marks[-1]}"] / f[f"history_tool_{marks[0]}"]
            label = f"9 history bytes per turn with one tool call (a search), after turn {at}"
            row(label, f"{tools} B ({tool_flat:.2f}x)", "last ≤ 1.1x first", tool_flat <= 1.1)
    return out


RECOVERY_TARGET = 3.0  # seconds from the restarted worker polling until each session it held answers again


def recovery_rows(results: Results) -> list[list[str]]:
    """Line 10: measurement, value, target, result."""
    f = results.figures
    if "recovery_answer_max" not in f:
        return []
    n, slowest, refused = f"{f['recovery_sessions']:.0f}", f["recovery_answer_max"], f["recovery_503"]
    ok = slowest <= RECOVERY_TARGET and refused == 0
    answered = f"{f['recovery_answer_p50']:.2f} / {slowest:.2f} s, {refused:.0f} answered 503"
    target = f"≤ {RECOVERY_TARGET:.0f} s, no 503"
    return [
        [f"10 a new message on each of {n} held sessions: p50 / slowest", answered, target, "PASS" if ok else "MISS"],
        ["  the restart: SIGKILL to the new worker polling", f"{f['recovery_restart']:.2f} s", "", ""],
        ["  the interrupted reply stored, from the SIGKILL", f"{f['recovery_reply']:.2f} s", "", ""],
    ]


def waits_rows(results: Results) -> list[list[str]]:
    """Line 11: measurement, value, target, result."""
    f = results.figures
    if "other_busy_p99" not in f:
        return []
    ratio, rows = f["other_busy_p99"] / f["other_idle_p99"], f["event_rows_per_exchange"]
    pending = f"{f['waits_pending']:.0f} of {f.get('waits', 50):.0f}"
    return [
        [
            f"11 another user's list p99, idle / while {pending} slow waits pend",
            f"{f['other_idle_p99']:.1f} / {f['other_busy_p99']:.1f} ms ({ratio:.2f}x)",
            "",
            "",
        ],
        [
            "  another user's list p50, idle / while waits pend",
            f"{f['other_idle_p50']:.1f} / {f['other_busy_p50']:.1f} ms",
            "",
            "",
        ],
        ["11 event rows per message and its stored reply", f"{rows:.2f}", "≤ 2", "PASS" if rows <= 2 else "MISS"],
    ]


def results_table(config: Config, results: Results) -> str:
    main = table(["measurement", *SIDES.values(), "ratio", "target", "result"], rows(config, results))
    header = ["beside the peer", SIDES["api"], PEER, SIDES["raw"], "API / peer", "API / raw", "target", "result"]
    first = ["first token", "model's own p50", "through the project p50", "overhead p50", "overhead p95"]
    tokens = table([*first, "target", "result"], first_token_rows(results))
    if turning := worker_rows(results):
        tokens += f"\n\n{table(['the worker, per message and per turn', 'measured', 'target', 'result'], turning)}"
    holds = table(["what one machine holds", "measured", "target", "result"], holding_rows(results))
    recovered = ""
    if waiting := waits_rows(results):
        recovered += f"\n\n{table(['one user waiting, and the event log', 'measured', 'target', 'result'], waiting)}"
    if recovery := recovery_rows(results):
        recovery_header = ["recovery time after a worker SIGKILL (from the restart)", "measured", "target", "result"]
        recovered += f"\n\n{table(recovery_header, recovery)}"
    return f"{table(header, peer_rows(results))}\n\n{tokens}\n\n{holds}{recovered}\n\n{main}"


def cpu_table(results: Results) -> str:
    names = list(next(iter(results.cpu.values())))
    cells = (
        [phase, *(f"{per[p]:.1f}" for p in names), f"{sum(per.values()):.1f}"] for phase, per in results.cpu.items()
    )
    return table(["phase", *names, "total"], list(cells))


def chart(config: Config, results: Results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f, levels = results.figures, config.levels
    colors = {"api": "#1f77b4", "fastapi": "#2ca02c", "raw": "#ff7f0e"}
    names = {"api": SIDES["api"], "fastapi": PEER, "raw": SIDES["raw"]}
    fig, ((latency, throughput, web, tokens), (rss, message, worker, history)) = plt.subplots(2, 4, figsize=(22, 8.5))

    def bars(ax: plt.Axes, unit: str, title: str, groups: dict[str, str]) -> None:
        sides = [side for side in colors if all(f"{k}_{side}" in f for k in groups.values())]
        if not sides:  # figures saved before these were measured
            ax.axis("off")
            return
        width = 0.8 / len(sides)
        for j, side in enumerate(sides):
            xs = [i + (j - (len(sides) - 1) / 2) * width for i in range(len(groups))]
            heights = [f[f"{k}_{side}"] for k in groups.values()]
            drawn = ax.bar(xs, heights, width, label=names[side], color=colors[side])
            ax.bar_label(drawn, fmt="%.1f" if unit == "ms" else "%.0f", fontsize=8)
        ax.set_xticks(range(len(groups)), list(groups))
        ax.set(ylabel=unit, title=title)

    latencies = {"start p50": "start_p50", "spaced start p50": "spaced_p50", "message p50": "msg_p50"}
    latencies |= {"first message p50": "first_p50"}
    bars(latency, "ms", "Latency, sequential (lower is better)", latencies)
    throughputs = {"starts": "start_tput", "end to end": "e2e_tput"}
    bars(throughput, "sessions/s", f"Throughput, {CONCURRENCY} clients (higher is better)", throughputs)
    web_cpu = {"per start": "webcpu", "per message": "webcpu_msg"}
    bars(web, "ms", "Web process CPU (target: ≤ 1.2x the peer's)", web_cpu)
    for side, color in ((side, colors[side]) for side in SIDES):
        held = levels if side == "api" else [f[f"raw_open_{n}"] for n in levels]
        rss.plot(held, [f[f"rss_{n}_{side}"] for n in levels], "o-", label=f"{SIDES[side]} worker", color=color)
        message.plot(levels, [f[f"msg_{n}_{side}"] for n in levels], "o-", label=SIDES[side], color=color)
    rss.axhline(300, color="red", linestyle="--", label="target 300 MB")
    rss.set(title="Worker RSS with N idle sessions open", ylabel="MB")
    target = f"target: 2x p50 at {levels[0]:,}"
    message.axhline(2 * f[f"msg_{levels[0]}_api"], color="red", linestyle="--", label=target)
    message.set(title="Message round trip p50 with N sessions open", ylabel="ms")
    for ax in (rss, message):
        ax.set(xscale="log", xlabel="sessions open at once", ylim=(0, None))
    runs = {key: label for key, label in TOKEN_BARS.items() if f"ttft_{key}_model_p50" in f}
    for j, (kind, label, color) in enumerate(
        [("model", "the model's own", "#7f7f7f"), ("project", "through the project", "#1f77b4")]
    ):
        xs = [i + (j - 0.5) * 0.38 for i in range(len(runs))]
        drawn = tokens.bar(xs, [f[f"ttft_{key}_{kind}_p50"] for key in runs], 0.38, label=label, color=color)
        tokens.bar_label(drawn, fmt="%.0f", fontsize=8)
    tokens.set_xticks(range(len(runs)), list(runs.values()))
    tokens.set(ylabel="ms", title="First token p50 (overhead ≤ 50 ms alone, ≤ 150 ms 20 at once)")
    if "turns_turn_cpu" in f:
        split = {"a message": "turns_message_cpu", "its turn": "turns_turn_cpu", "both": "turns_worker_cpu"}
        drawn = worker.bar(range(len(split)), [f[k] for k in split.values()], 0.5, color=colors["api"])
        worker.bar_label(drawn, fmt="%.0f", fontsize=8)
        worker.set_xticks(range(len(split)), list(split))
        worker.axhline(TURN_CPU_TARGET, color="red", linestyle="--", label=f"target: a turn ≤ {TURN_CPU_TARGET:.0f} ms")
        worker.set(ylabel="ms", title=f"Worker CPU, {f['turns_n']:.0f} messages at once")
        worker.legend()
    else:
        worker.axis("off")
    if marks := history_marks(f):
        drawn = history.bar(range(len(marks)), [f[f"history_{m}"] for m in marks], 0.5, color=colors["api"])
        history.bar_label(drawn, fmt="%.0f", fontsize=8)
        history.set_xticks(range(len(marks)), [f"turn {f[f'history_{m}_turn']:.0f}" for m in marks])
        history.set(ylabel="bytes", title="Workflow history added by one turn (target: flat)")
    else:
        history.axis("off")
    for ax in (latency, throughput, web, tokens, rss, message):
        if ax.has_data():
            ax.legend()
    title = "Django + Temporal beside FastAPI + Temporal and the raw SDK"
    day = results.facts.get("date", f"{datetime.date.today():%Y-%m-%d}")[:10]  # the run's, also when written again
    fig.suptitle(f"make bench ({config.scale}), {day}: {title}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(config: Config, results: Results) -> None:
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    chart(config, results, out / "benchmarks.png")
    f, first, top = results.figures, config.levels[0], config.levels[-1]
    every = [*peer_rows(results), *first_token_rows(results), *worker_rows(results), *holding_rows(results)]
    every += recovery_rows(results) + waits_rows(results)
    every += rows(config, results)
    misses = "; ".join(r[0].strip() for r in every if r[-1] == "MISS")
    fields = {"config": config, "results": results, "first": first, "top": top, "f": f}
    fields |= {"CONCURRENCY": CONCURRENCY, "OPEN_WINDOW": OPEN_WINDOW, "THROTTLE": THROTTLE}
    fields |= {"results_table": results_table(config, results), "cpu_table": cpu_table(results)}
    fields["missed"] = f"Targets missed in this run: {misses or 'none'}.{' See the analysis below.' if misses else ''}"
    fields["idle_seconds"] = IDLE_SECONDS
    fields["minutes"] = f"{results.wall / 60:.1f} minutes" if config.scale == "full" else "about 10 minutes"
    fields["facts"] = "\n".join(f"- {k}: {v}" for k, v in results.facts.items())
    fields["at_top"] = {k: f[f"{k}_{top}_api"] for k in ("threads", "msg", "rss")}
    fields["at_top"]["msg_first"] = f[f"msg_{first}_api"]
    # sessions/s x the worker's CPU seconds per session
    fields["worker_cores"] = f["e2e_tput_api"] * results.cpu["3 end to end, per session, api"]["worker"] / 1000
    page = (HERE / "report_template.md").read_text().format_map(fields)
    (out / "benchmarks.md").write_text(f"{page}\n## Analysis\n\n{(HERE / 'analysis.md').read_text().strip()}\n")


if __name__ == "__main__":
    saved = json.loads(Path(sys.argv[1]).read_text())
    write(Config(**saved["config"]), Results(**saved["results"]))
