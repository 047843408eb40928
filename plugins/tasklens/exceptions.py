"""Typed errors raised inside tasklens; only the Airflow-facing edge catches them."""

from __future__ import annotations

from collections.abc import Iterable

from tasklens.redact import redact

__all__ = ["ConfigError", "DeliveryError", "StoreError", "StoreNotReady", "TasklensError"]


class TasklensError(Exception):
    """Base class of every error tasklens raises on purpose."""


class ConfigError(TasklensError):
    """Bad configuration: says which file and key are wrong and how to fix it.

    >>> raise ConfigError("rules.yml", "routes[0].channels", "unknown channel 'slak'", "use one of: slack, email")

    ``kind`` classifies the problem for the ``tasklens.config_errors`` metric (``missing_file``,
    ``invalid_yaml``, ``unknown_preset``, ...).
    """

    def __init__(self, source: str, key: str, problem: str, fix: str, *, kind: str = "invalid") -> None:
        self.source, self.key, self.problem, self.fix, self.kind = source, key, problem, fix, kind
        super().__init__(f"{source}: {key}: {problem}. Fix: {fix}")


class StoreError(TasklensError):
    """The alert store could not be reached or written."""


class StoreNotReady(StoreError):
    """The alert store's schema is not the one this tasklens needs (``tasklens db upgrade`` migrates it)."""


class DeliveryError(TasklensError):
    """A channel could not deliver a message; ``retryable`` says whether trying again may help.

    The message is scrubbed (:func:`tasklens.redact.redact`): no URL path or credentials, no Slack token and none
    of ``secrets`` (pass the connection's password and host) survive into the store, the UI, health or logs.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = True,
        retry_after_s: float | None = None,
        secrets: Iterable[str | None] = (),
    ) -> None:
        self.retryable = retryable
        self.retry_after_s = retry_after_s
        super().__init__(redact(message, secrets))
