"""What CONN_MAX_AGE=0 would cost: a new connection per request and per activity, Django's and a plain driver's."""

import statistics
import timeit

from bench.load import Load
from bench.procs import manage

DJANGO = """
import statistics, timeit
from django.db import connection

def connect():
    connection.ensure_connection()
    connection.cursor().execute("SELECT 1")
    connection.close()

print(statistics.median(timeit.repeat(connect, number=1, repeat=30)))
"""


def connect_cost(load: Load) -> None:
    raw = timeit.repeat(lambda: load.db.query("SELECT 1"), number=1, repeat=30)  # connect, SELECT 1, close
    load.results.figures["connect_raw_ms"] = 1000 * statistics.median(raw)
    load.results.figures["connect_django_ms"] = 1000 * float(manage(load.rig.env, "shell", "-c", DJANGO).split()[-1])
