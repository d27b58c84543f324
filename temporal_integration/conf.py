"""The Temporal settings: each one's default and check (`temporal_settings`), and the frozen value the client and
the worker read (`get_config()`)."""

from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured
from temporalio.service import TLSConfig

from temporal_integration.app_settings import AppSettings, Setting, not_empty, positive

NOT_EMPTY = "set a value."
temporal_settings = AppSettings(
    {
        "TEMPORAL_ADDRESS": Setting("localhost:7233", not_empty, NOT_EMPTY),
        "TEMPORAL_NAMESPACE": Setting("default", not_empty, NOT_EMPTY),
        "TEMPORAL_TASK_QUEUE": Setting("chat-sessions", not_empty, NOT_EMPTY),
        "TEMPORAL_API_KEY": Setting(""),  # Temporal Cloud's; turns TLS on
        "TEMPORAL_TLS_CERT": Setting(""),  # PEM file paths, for mTLS
        "TEMPORAL_TLS_KEY": Setting(""),
        "TEMPORAL_TLS_CA": Setting(""),
        "TEMPORAL_UI_URL": Setting("http://localhost:8233"),
        "TEMPORAL_RPC_TIMEOUT": Setting(5.0, positive, "set a positive number of seconds."),
        # A Keyword search attribute set to the user id on every session's workflow (the namespace must have it).
        "TEMPORAL_USER_SEARCH_ATTRIBUTE": Setting(""),
        # What the worker hosts: dotted paths of workflow classes and activity functions.
        "TEMPORAL_WORKFLOWS": Setting(()),
        "TEMPORAL_ACTIVITIES": Setting(()),
        "TEMPORAL_SCHEDULES": Setting(()),  # dotted paths of temporal_integration.schedules.ScheduleBuilder functions
    }
)

# Settings whose change needs a new connection (the rest only need the config read again).
CONNECTION_SETTINGS = frozenset(
    f"TEMPORAL_{name}" for name in ["ADDRESS", "NAMESPACE", "API_KEY", "RPC_TIMEOUT", "TLS_CERT", "TLS_KEY", "TLS_CA"]
)


@dataclass(frozen=True)
class TemporalConfig:
    address: str
    namespace: str
    task_queue: str
    api_key: str | None
    tls_cert: bytes | None
    tls_key: bytes | None
    tls_ca: bytes | None
    ui_url: str
    rpc_timeout: timedelta
    user_search_attribute: str | None = None
    # What the worker hosts: dotted paths of workflow classes and activity functions, as settings name them.
    workflows: tuple[str, ...] = ()
    activities: tuple[str, ...] = ()
    schedules: tuple[str, ...] = ()

    @property
    def tls(self) -> TLSConfig | bool:
        if self.tls_cert:
            return TLSConfig(
                client_cert=self.tls_cert, client_private_key=self.tls_key, server_root_ca_cert=self.tls_ca
            )
        # Temporal Cloud's API keys only travel over TLS.
        return bool(self.api_key or self.tls_ca)

    def workflow_ui_url(self, workflow_id: str) -> str:
        """The workflow in the Web UI: its latest run."""
        return f"{self.ui_url}/namespaces/{self.namespace}/workflows/{workflow_id}"


def _read_pem(setting: str) -> bytes | None:
    path = getattr(temporal_settings, setting)
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ImproperlyConfigured(f"{setting}={path!r} cannot be read: {exc.strerror}") from exc


@cache
def get_config() -> TemporalConfig:
    read = temporal_settings
    if bool(read.TEMPORAL_TLS_CERT) != bool(read.TEMPORAL_TLS_KEY):
        raise ImproperlyConfigured("mTLS needs both TEMPORAL_TLS_CERT and TEMPORAL_TLS_KEY; only one is set.")
    return TemporalConfig(
        address=read.TEMPORAL_ADDRESS,
        namespace=read.TEMPORAL_NAMESPACE,
        task_queue=read.TEMPORAL_TASK_QUEUE,
        api_key=read.TEMPORAL_API_KEY or None,
        tls_cert=_read_pem("TEMPORAL_TLS_CERT"),
        tls_key=_read_pem("TEMPORAL_TLS_KEY"),
        tls_ca=_read_pem("TEMPORAL_TLS_CA"),
        ui_url=read.TEMPORAL_UI_URL.rstrip("/"),
        rpc_timeout=timedelta(seconds=read.TEMPORAL_RPC_TIMEOUT),
        user_search_attribute=read.TEMPORAL_USER_SEARCH_ATTRIBUTE or None,
        workflows=tuple(read.TEMPORAL_WORKFLOWS),
        activities=tuple(read.TEMPORAL_ACTIVITIES),
        schedules=tuple(read.TEMPORAL_SCHEDULES),
    )
