"""Where a client call goes: a database, another service of ours, or a third party.

Read from the call's attributes by the semantic conventions: `db.system.name`
(or the older `db.system`) makes it a database call; otherwise the target is
`peer.service`, else `server.address` (older: `net.peer.name`), else the host
of `url.full`. A target is internal when it is a service that has sent
telemetry itself, is listed in `internal_services`, or has an address that
matches `internal_addresses`; anything else is a third party.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from connectors.otlp.settings import OtlpSettings
from foreshock.layers import Layer
from foreshock.schema import Attribute

__all__ = ["Target", "Targets"]

TargetKind = Literal["database", "internal", "third_party"]
_IPV4 = re.compile(r"\d{1,3}(\.\d{1,3}){3}")


@dataclass(frozen=True, slots=True)
class Target:
    """The service a client call reaches, its layer and what kind it is."""

    service: str
    layer: Layer
    kind: TargetKind


class Targets:
    """Classifies client calls; learns internal services as they report."""

    def __init__(self, settings: OtlpSettings) -> None:
        self._known = set(settings.internal_services)
        self._addresses = [re.compile(p) for p in settings.internal_addresses]

    def learn(self, service: str) -> None:
        """A service that sends its own telemetry is one of ours."""
        self._known.add(service)

    def of(self, attributes: Mapping[str, Attribute]) -> Target | None:
        """The target of a call with these attributes, None if it names none."""
        name = _text(attributes, "peer.service")
        address = _address(attributes)
        system = _text(attributes, "db.system.name") or _text(attributes, "db.system")
        if system is not None:
            database = name or address or _text(attributes, "db.namespace") or system
            return Target(database, Layer.DATABASE, "database")
        if name is None and address is None:
            return None
        if self._internal(name, address):
            service = name if name is not None else _service_of(address or "")
            return Target(service, Layer.BACKEND, "internal")
        return Target(name or address or "", Layer.THIRD_PARTY, "third_party")

    def _internal(self, name: str | None, address: str | None) -> bool:
        if name is not None and name in self._known:
            return True
        if address is None:
            return False
        if address in self._known or _service_of(address) in self._known:
            return True
        return any(p.fullmatch(address) for p in self._addresses)


def _text(attributes: Mapping[str, Attribute], key: str) -> str | None:
    value = attributes.get(key)
    return value if isinstance(value, str) and value else None


def _address(attributes: Mapping[str, Attribute]) -> str | None:
    for key in ("server.address", "net.peer.name"):
        value = _text(attributes, key)
        if value is not None:
            return value.lower()
    url = _text(attributes, "url.full") or _text(attributes, "http.url")
    if url is None:
        return None
    host = urlsplit(url).hostname
    return host or None


def _service_of(address: str) -> str:
    # A cluster-internal name starts with the service: orders.shop.svc -> orders.
    if _IPV4.fullmatch(address):
        return address
    return address.split(".", 1)[0]
