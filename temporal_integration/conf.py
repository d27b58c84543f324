"""The Temporal settings, read once from Django settings into one frozen value."""

from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from temporalio.service import TLSConfig

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
    path = getattr(settings, setting)
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ImproperlyConfigured(f"{setting}={path!r} cannot be read: {exc.strerror}") from exc


@cache
def get_config() -> TemporalConfig:
    if bool(settings.TEMPORAL_TLS_CERT) != bool(settings.TEMPORAL_TLS_KEY):
        raise ImproperlyConfigured("mTLS needs both TEMPORAL_TLS_CERT and TEMPORAL_TLS_KEY; only one is set.")
    if settings.TEMPORAL_RPC_TIMEOUT <= 0:
        raise ImproperlyConfigured("TEMPORAL_RPC_TIMEOUT must be a positive number of seconds.")
    for setting in ("TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "TEMPORAL_TASK_QUEUE"):
        if not getattr(settings, setting):
            raise ImproperlyConfigured(f"{setting} must not be empty.")
    return TemporalConfig(
        address=settings.TEMPORAL_ADDRESS,
        namespace=settings.TEMPORAL_NAMESPACE,
        task_queue=settings.TEMPORAL_TASK_QUEUE,
        api_key=settings.TEMPORAL_API_KEY or None,
        tls_cert=_read_pem("TEMPORAL_TLS_CERT"),
        tls_key=_read_pem("TEMPORAL_TLS_KEY"),
        tls_ca=_read_pem("TEMPORAL_TLS_CA"),
        ui_url=settings.TEMPORAL_UI_URL.rstrip("/"),
        rpc_timeout=timedelta(seconds=settings.TEMPORAL_RPC_TIMEOUT),
        user_search_attribute=settings.TEMPORAL_USER_SEARCH_ATTRIBUTE or None,
        workflows=tuple(settings.TEMPORAL_WORKFLOWS),
        activities=tuple(settings.TEMPORAL_ACTIVITIES),
    )
