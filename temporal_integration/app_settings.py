"""An app's settings read through one object that holds each one's default and check, as DRF's `api_settings`."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed


@dataclass(frozen=True)
class Setting:
    default: Any
    check: Callable[[Any], bool] | None = None
    rule: str = ""  # what to set instead, for the error message: "set a number greater than 0."


def positive(value: float) -> bool:
    return value > 0


def at_least_zero(value: float) -> bool:
    return value >= 0


def not_empty(value: str) -> bool:
    return bool(value)


class AppSettings:
    """`app_settings.NAME`: Django's setting NAME when the project sets it (the environment, through
    chatproject.settings), else its default; a value that fails its check raises ImproperlyConfigured naming it.

    Values are read once and read again after a setting changes (override_settings, pytest-django's `settings`).
    """

    def __init__(self, specs: dict[str, Setting]) -> None:
        self.specs = specs
        self._values: dict[str, Any] = {}
        setting_changed.connect(self._forget, weak=False)

    @property
    def defaults(self) -> dict[str, Any]:
        return {name: spec.default for name, spec in self.specs.items()}

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            pass
        spec = self.specs.get(name)
        if spec is None:
            raise AttributeError(name)
        value = getattr(settings, name, spec.default)
        if spec.check is not None and not spec.check(value):
            raise ImproperlyConfigured(f"{name}={value!r} is not valid: {spec.rule}")
        self._values[name] = value
        return value

    def check(self) -> None:
        """Reads every setting, so a wrong one fails start-up rather than the first request that needs it."""
        for name in self.specs:
            getattr(self, name)

    def _forget(self, *, setting: str, **kwargs: object) -> None:
        if setting in self.specs:
            self._values.pop(setting, None)
