"""The production settings path, as the Procfile runs it: DEBUG off, collected static files, gunicorn."""

import os
import subprocess
import sys

import httpx
import pytest
from django.conf import settings

from devtools.processes import WebServer
from tests.conftest import database_url

pytestmark = pytest.mark.django_db(transaction=True)


def test_production_settings_serve_the_app_and_its_collected_static_files(dev_server, tmp_path):
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")},
        "DJANGO_SETTINGS_MODULE": "chatproject.settings_production",
        "DJANGO_SECRET_KEY": "p" * 50,
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "DJANGO_STATIC_ROOT": str(tmp_path / "static"),
        "DATABASE_URL": database_url(),
        "TEMPORAL_ADDRESS": dev_server.address,
    }
    collected = subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput"],
        env=env, cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert collected.returncode == 0, collected.stderr
    hashed = next((tmp_path / "static" / "admin" / "css").glob("base.*.css")).name
    chat_css = next((tmp_path / "static" / "chat").glob("chat.*.css")).name

    web = WebServer(env, tmp_path / "web.log")
    try:
        static = httpx.get(f"{web.url}/static/admin/css/{hashed}")
        login = httpx.get(f"{web.url}/admin/login/")
        chat_login = httpx.get(f"{web.url}/accounts/login/")
        chat_static = httpx.get(f"{web.url}/static/chat/{chat_css}")
        missing = httpx.get(f"{web.url}/nowhere/")
        anonymous = httpx.get(f"{web.url}/api/sessions/")
        health = httpx.get(f"{web.url}/healthz")
    finally:
        web.stop()

    assert static.status_code == 200
    assert "max-age=315360000" in static.headers["cache-control"]  # hashed names cache for good
    assert login.status_code == 200
    assert f"/static/admin/css/{hashed}" in login.text  # pages link the hashed, collected files
    assert f"/static/chat/{chat_css}" in chat_login.text  # the chat page's too
    assert chat_static.status_code == 200
    assert "make run" not in chat_login.text  # the demo user's hint is for development only
    assert (missing.status_code, missing.json()) == (404, {"detail": "Not found."})  # no DEBUG page
    assert anonymous.status_code == 401
    assert health.json() == {"status": "ok", "database": "ok", "temporal": "ok"}
