from django.apps import AppConfig


class TemporalIntegrationConfig(AppConfig):
    name = "temporal_integration"
    verbose_name = "Temporal integration"

    def ready(self) -> None:
        from temporal_integration import client  # noqa: F401  (connects its setting_changed receiver)
        from temporal_integration.conf import get_config

        get_config()  # a misconfigured Temporal connection fails at start-up, not at first request
