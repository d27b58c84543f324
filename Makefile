# `make run` starts everything for local development; `make test` runs the whole suite, `make test-fast` the
# tests that need no Temporal server.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)

.PHONY: run test test-fast lint format install temporal worker web clean histories bench bench-servers screenshots

# The development set (requirements-dev.txt includes the runtime set, requirements.txt).
$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

# Local development settings (DEBUG on), read by every `manage.py` in any shell; written once, then yours to edit.
.env:
	cp .env.example $@

# The Temporal dev server, the worker and the web server (uvicorn, reloading) together; Ctrl-C stops all three.
run: $(STAMP) .env
	mkdir -p var
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py create_demo_user
	$(BIN)/honcho -f Procfile.dev start

# On two processes (pytest-xdist), each with its own test database, Temporal servers and Redis database
# (tests/settings.py): most of the suite waits on servers, processes and timeouts, so two at once keep CI's 2 cores
# busier; worksteal evens out the long tests between them.
test: $(STAMP)
	$(BIN)/pytest -n 2 --dist worksteal

# On two processes (pytest-xdist): most of the fast lane's time is fresh Python processes starting.
test-fast: $(STAMP)
	$(BIN)/pytest -m "not temporal" -n 2

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Each process on its own, in its own terminal.
temporal: $(STAMP)
	mkdir -p var
	$(BIN)/honcho -f Procfile.dev start temporal

worker: $(STAMP) .env
	$(BIN)/python manage.py run_temporal_worker

web: $(STAMP) .env
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py runserver

clean:
	rm -rf $(VENV) var/*.sqlite3 var/*.sqlite3-wal var/*.sqlite3-shm var/temporal.db

# Records workflow histories for the determinism (replay) test; see tests/record_histories.py.
histories: $(STAMP)
	DJANGO_SETTINGS_MODULE=tests.settings $(BIN)/python -m tests.record_histories

# The Django + Temporal path measured against a raw-SDK baseline in the same run, on processes of its own;
# prints the table and writes docs/benchmarks.md and docs/benchmarks.png. BENCH_SCALE=small for a quick run.
bench: $(STAMP)
	$(BIN)/python -m bench

# The web server candidates (gunicorn's worker classes, uvicorn, granian) under the same start workloads;
# writes docs/benchmarks-servers.md.
bench-servers: $(STAMP)
	$(BIN)/python -m bench.servers

# The chat page's screenshots in docs/screenshots/ (light, dark; 1100 and 375 px); needs `make run` in another terminal.
screenshots: $(STAMP)
	$(BIN)/python -m devtools.screenshots
