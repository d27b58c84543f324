"""The project's shape, as docs/ and README describe it: which package may import which, and documented defaults
that are the code's own."""

import ast
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def imported_or_run_modules(path: Path) -> set[str]:
    """The imports, and the dotted names in string constants: modules run with `python -m` or imported by name."""
    strings = {node.value for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Constant)}
    return imported_modules(path) | {s for s in strings if isinstance(s, str) and re.fullmatch(r"[a-z_]\w*(\.\w+)+", s)}


def test_temporal_integration_imports_nothing_from_chat():
    offending = {
        str(path.relative_to(ROOT)): sorted(m for m in imported_modules(path) if m.split(".")[0] == "chat")
        for path in (ROOT / "temporal_integration").rglob("*.py")
    }

    assert {path: modules for path, modules in offending.items() if modules} == {}


def offending_modules(package: str, forbidden: set[str]) -> dict[str, list[str]]:
    """Per file under `package`, the modules it imports or runs from the `forbidden` packages."""
    offending = {
        str(path.relative_to(ROOT)): sorted(m for m in imported_or_run_modules(path) if m.split(".")[0] in forbidden)
        for path in (ROOT / package).rglob("*.py")
    }
    return {path: modules for path, modules in offending.items() if modules}


def test_bench_imports_nothing_from_tests():
    assert offending_modules("bench", {"tests"}) == {}


def test_devtools_imports_nothing_from_tests_or_bench():
    assert offending_modules("devtools", {"tests", "bench"}) == {}


@pytest.mark.parametrize("module", ["admin", "serializers", "views"])
def test_the_chat_edges_import_nothing_from_temporal(module):
    modules = imported_modules(ROOT / "chat" / f"{module}.py")

    assert sorted(m for m in modules if m.split(".")[0] in ("temporalio", "temporal_integration")) == []


# Django's settings, and the apps' own as they resolve them (set or defaulted).
SETTINGS_DUMP = (
    "import json, django; django.setup(); from django.conf import settings; "
    "from chat.conf import chat_settings; from temporal_integration.conf import temporal_settings; "
    "apps = {k: getattr(s, k) for s in (chat_settings, temporal_settings) for k in s.specs}; "
    "print(json.dumps({**{k: repr(getattr(settings, k)) for k in dir(settings) if k.isupper() and k not in apps}, "
    "**{k: repr(v) for k, v in apps.items()}}))"
)
# Documented relative to the project directory, where the code holds absolute paths.
PATH_VALUED = {"DATABASE_URL", "DJANGO_STATIC_ROOT", "DJANGO_ENV_FILE"}


def settings_with(env: dict[str, str], *, debug: bool = True) -> dict[str, str]:
    """Every setting as a fresh process reads it, with nothing of ours in the environment but `env`."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "TEMPORAL_", "CHAT_", "DATABASE_"))}
    base = {**clean, "DJANGO_SETTINGS_MODULE": "chatproject.settings", "DJANGO_ENV_FILE": ""}
    if debug:
        base["DJANGO_DEBUG"] = "true"
    out = subprocess.run(
        [sys.executable, "-c", SETTINGS_DUMP], env={**base, **env}, cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_env_example_documents_the_defaults_the_code_has():
    documented = {
        name: value
        for name, value in re.findall(
            r"^# ([A-Z][A-Z0-9_]+)=(.*?)(?:\s+#.*)?$", (ROOT / ".env.example").read_text(), re.M
        )
        if name not in PATH_VALUED
    }
    assert len(documented) >= 20

    with ThreadPoolExecutor(2) as pool:  # two fresh processes at once: each spends seconds importing
        documented_read, default_read = pool.map(settings_with, [documented, {}])

    assert documented_read == default_read


def test_a_local_env_file_configures_manage_py_in_any_shell(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("DJANGO_DEBUG=true\nCHAT_MESSAGE_MAX_LENGTH=123  # a comment\n")

    read = settings_with({"DJANGO_ENV_FILE": str(env_file)}, debug=False)

    assert (read["DEBUG"], read["CHAT_MESSAGE_MAX_LENGTH"]) == ("True", "123")
