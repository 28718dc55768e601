"""IdentityReport: who the connection became, hop by hop, for humans and for JSON."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Hop", "IdentityReport"]


@dataclass(frozen=True, kw_only=True)
class Hop:
    """One identity reached. ``index`` 0 is the ambient source identity."""

    index: int
    principal: str
    method: str
    expiry: dt.datetime | None = None
    endpoint: str | None = None
    details: tuple[tuple[str, str], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "principal": self.principal,
            "method": self.method,
            "expiry": self.expiry.isoformat() if self.expiry else None,
            "endpoint": self.endpoint,
            "details": dict(self.details),
        }


@dataclass(frozen=True, kw_only=True)
class IdentityReport:
    """The identity a connection resolves to, with every hop that led there."""

    cloud: str
    conn_id: str | None
    hops: tuple[Hop, ...]
    notes: tuple[str, ...] = field(default=())

    @property
    def final(self) -> Hop:
        return self.hops[-1]

    def to_dict(self) -> dict[str, Any]:
        return {
            "cloud": self.cloud,
            "conn_id": self.conn_id,
            "principal": self.final.principal,
            "hops": [hop.to_dict() for hop in self.hops],
            "notes": list(self.notes),
        }

    def one_line(self) -> str:
        """``test_connection`` text: the final identity and the path to it."""
        path = " -> ".join(f"{hop.principal} ({hop.method})" for hop in self.hops)
        expiry = self.final.expiry
        until = f"; credentials valid until {expiry.isoformat(timespec='seconds')}" if expiry else ""
        notes = "".join(f" ({note})" for note in self.notes)
        return f"Connected as {self.final.principal}{until}. Path: {path}{notes}"

    def render(self) -> str:
        """A multi-line report for the CLI and the demo."""
        lines = [f"{self.cloud} identity for connection {self.conn_id!r}:"]
        for hop in self.hops:
            label = "source" if hop.index == 0 else f"hop {hop.index}"
            lines.append(f"  [{label}] {hop.principal}")
            lines.append(f"      method: {hop.method}")
            if hop.expiry:
                lines.append(f"      expires: {hop.expiry.isoformat(timespec='seconds')}")
            if hop.endpoint:
                lines.append(f"      endpoint: {hop.endpoint}")
            for key, value in hop.details:
                lines.append(f"      {key}: {value}")
        lines.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(lines)
