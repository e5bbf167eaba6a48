"""Fixtures of the connector tests: a real Alertmanager and its webhook."""

from tests.alertmanager_helpers import alertmanager, webhook

__all__ = ["alertmanager", "webhook"]
