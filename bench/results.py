"""A run's configuration and findings: the types the runner fills in and the report reads."""

import os
from dataclasses import dataclass, field
from pathlib import Path

CONCURRENCY = 32  # clients at once in the throughput measurements, as in tests/test_load.py
# Sessions started but not yet written, at most, while opening sessions for the scale levels: a backlog larger than
# the sticky cache (1,000) would evict sessions between their first and second workflow task and make the worker
# replay them, a cost of the set-up, not of holding sessions open.
OPEN_WINDOW = 100
THROTTLE = "1000000/min"  # both of the project's throttles: its defaults would answer 429 within the first second
PROFILES = {
    # samples per side: sequential latencies, sessions per throughput burst (x rounds), messages, scale levels
    # idle SSE clients, turns streaming at once, turns of the one session whose history is measured, worker SIGKILLs,
    # another user's requests while one user waits, and the replies that user waits on at once
    "full": {"seq": 60, "burst": 150, "rounds": 2, "messages": 100, "levels": [10, 1000, 10000], "level_messages": 60}
    | {"streams": 1000, "turns": 100, "history_turns": 200, "recoveries": 2, "other_requests": 200, "waits": 50},
    "small": {"seq": 15, "burst": 60, "rounds": 1, "messages": 20, "levels": [10, 300], "level_messages": 30}
    | {"streams": 200, "turns": 30, "history_turns": 8, "recoveries": 1, "other_requests": 50, "waits": 25},
}
# The whole run, at most: the bound for each scale.
WALL_LIMIT = {"full": 600, "small": 120}


@dataclass
class Config:
    scale: str
    seq: int
    burst: int
    rounds: int
    messages: int
    levels: list[int]
    level_messages: int
    streams: int
    turns: int
    history_turns: int
    scale_raw_max: int  # raw sessions opened for the scale levels, at most
    out_dir: str
    keep_tmp: bool
    recoveries: int = 1  # a default, for the figures saved before line 10
    other_requests: int = 50  # and before line 11
    waits: int = 50

    @classmethod
    def from_env(cls) -> "Config":
        scale = os.environ.get("BENCH_SCALE", "full")
        if scale not in PROFILES:
            raise SystemExit(f"BENCH_SCALE={scale!r}: use one of {', '.join(PROFILES)}")
        knobs = {k: int(os.environ.get(f"BENCH_{k.upper()}", v)) for k, v in PROFILES[scale].items() if k != "levels"}
        levels = os.environ.get("BENCH_LEVELS")
        return cls(
            scale=scale,
            levels=sorted(int(n) for n in levels.split(",")) if levels else PROFILES[scale]["levels"],
            **knobs,
            scale_raw_max=int(os.environ.get("BENCH_SCALE_RAW_MAX", "100")),
            out_dir=os.environ.get("BENCH_OUT_DIR", str(Path(__file__).resolve().parent.parent / "docs")),
            keep_tmp=os.environ.get("BENCH_KEEP_TMP", "0") == "1",
        )


@dataclass
class Results:
    figures: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, dict[str, float]] = field(default_factory=dict)  # phase -> process -> CPU ms per operation
    timings: dict[str, float] = field(default_factory=dict)  # phase -> seconds
    facts: dict[str, str] = field(default_factory=dict)  # the machine, the versions, the web server
    settings: dict[str, float] = field(default_factory=dict)  # the project's, which the figures depend on
    wall: float = 0.0
