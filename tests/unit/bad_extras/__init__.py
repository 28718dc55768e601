"""The corpus of malformed connection extras (``aws.json``, ``gcp.json``, ``azure.json``) and its loader.

Each file holds a ``base`` extra the parser accepts and ``cases``, one malformed variant each:

- ``set`` / ``unset``: keys changed on (or removed from) the base; or ``extra``: the whole extra, a string
  being the connection's stored extra text (``"[1, 2]"``, ``"{not json"``) as Airflow keeps it;
- ``field``: the field the ``ConfigError`` must name (``extra`` when the extra itself is wrong);
- ``schema``: ``true`` if the form's JSON schema rejects the case, ``false`` if JSON Schema on per-field
  form schemas cannot say it (``why`` says why: two fields related, legacy keys, text that is not JSON);
- ``secret``: a credential pasted into the field, which no message may echo.

Long values are written as macros: ``{"$repeat": "x", "times": n, "before": "", "after": ""}``,
``{"$list": "fmt-{}", "times": n}`` (``n`` strings), ``{"$object": key_fmt, "value": v, "times": n}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CLOUDS", "Case", "base_extra", "load"]

CLOUDS = ("aws", "gcp", "azure")
_DIR = Path(__file__).resolve().parent


def _expand(value: Any) -> Any:
    if isinstance(value, dict):
        if "$repeat" in value:
            return (
                str(value.get("before", "")) + str(value["$repeat"]) * int(value["times"]) + str(value.get("after", ""))
            )
        if "$list" in value:
            return [str(value["$list"]).format(i) for i in range(int(value["times"]))]
        if "$object" in value:
            key = _expand(value["$object"])
            return {str(key).format(i): _expand(value["value"]) for i in range(int(value["times"]))}
        return {k: _expand(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v) for v in value]
    return value


@dataclass(frozen=True)
class Case:
    cloud: str
    conn_type: str
    id: str
    field: str
    schema_rejects: bool
    extra: Any  # a dict, or the stored extra text
    secret: str | None
    why: str

    @property
    def label(self) -> str:
        return f"{self.cloud}:{self.id}"

    def instance(self) -> Any:
        """What the form's JSON schema sees: the extra as JSON (``ValueError`` when it is not JSON)."""
        return json.loads(self.extra) if isinstance(self.extra, str) else self.extra


def _document(cloud: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((_DIR / f"{cloud}.json").read_text(encoding="utf-8"))
    return document


def base_extra(cloud: str) -> dict[str, Any]:
    return dict(_document(cloud)["base"])


def load(cloud: str | None = None) -> list[Case]:
    cases = []
    for name in CLOUDS if cloud is None else (cloud,):
        document = _document(name)
        for raw in document["cases"]:
            if "extra" in raw:
                extra = _expand(raw["extra"])
            else:
                extra = dict(document["base"])
                for key in raw.get("unset", ()):
                    extra.pop(key, None)
                extra.update(_expand(raw.get("set", {})))
            cases.append(
                Case(
                    cloud=name,
                    conn_type=document["conn_type"],
                    id=raw["id"],
                    field=raw["field"],
                    schema_rejects=bool(raw["schema"]),
                    extra=extra,
                    secret=raw.get("secret"),
                    why=raw.get("why", ""),
                )
            )
    return cases
