"""What CONN_MAX_AGE=0 would cost: a new connection per request and per activity, Django's and a plain driver's."""

import statistics
import time
from contextlib import closing

from bench.load import Load
from bench.procs import manage

DJANGO = """
import time, statistics
from django.db import connection
samples = []
for _ in range(30):
    t0 = time.perf_counter()
    connection.ensure_connection()
    connection.cursor().execute("SELECT 1")
    connection.close()
    samples.append(1000 * (time.perf_counter() - t0))
print(statistics.median(samples))
"""


def connect_cost(load: Load) -> None:
    samples = []
    for _ in range(30):
        t0 = time.perf_counter()
        with closing(load.db.connect()) as conn:
            conn.one("SELECT 1")
        samples.append(1000 * (time.perf_counter() - t0))
    load.results.figures["connect_raw_ms"] = statistics.median(samples)
    load.results.figures["connect_django_ms"] = float(manage(load.rig.env, "shell", "-c", DJANGO).split()[-1])
