"""One declaration per connection field, and everything generated from it.

A connection type's fields are declared once, as :class:`Field` objects in the cloud's ``spec.py``.
From that single list come the ``conn-fields`` / ``ui-field-behaviour`` of the provider info (the
Airflow 3.2+ forms), the legacy ``get_connection_form_widgets`` / ``get_ui_field_behaviour`` (Airflow
2.11-3.1 forms), the reading and validation of a connection's extra, and the docs' field tables.

Pure Python: importing this module imports neither Airflow nor a cloud SDK (the legacy widget builder
imports wtforms and Flask-AppBuilder inside the function, as Airflow requires).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from airflow_workload_identity.errors import ConfigError

__all__ = ["END", "ConnectionForm", "Field", "describe_value", "read_extra"]

#: End anchor for field patterns: ``$`` alone also matches before a final newline in Python (and so in
#: the ``jsonschema`` package), never in ECMAScript; with the look-ahead both read the same.
END = r"$(?!\n)"

_STANDARD_FIELDS = ("host", "port", "schema", "login", "password", "extra", "description")
_TYPES = ("string", "integer", "number", "boolean", "array", "object")


@dataclass(frozen=True, kw_only=True)
class Field:
    """One connection field: its extra key, how the form shows it, and the values it accepts.

    ``schema`` is a JSON schema fragment without ``"null"`` in its type: optional fields get it added
    when the form is generated. ``fix`` is the advice a :class:`ConfigError` gives for a bad value.
    """

    name: str
    label: str
    description: str
    schema: Mapping[str, Any]
    fix: str
    required: bool = False
    secret: bool = False
    section: str | None = None
    #: For a string that fails ``pattern``: says what exactly is wrong (``None``: no more than "the shape").
    explain: Callable[[str], str | None] | None = None

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", self.name) or "__" in self.name:
            raise ValueError(f"field name {self.name!r} must match ^[a-z][a-z0-9_]*$ without '__'")
        if self.schema.get("type") not in _TYPES:
            raise ValueError(f"field {self.name!r}: schema type must be one of {_TYPES}")

    @property
    def type(self) -> str:
        return str(self.schema["type"])

    def conn_field(self) -> dict[str, Any]:
        """The ``conn-fields`` entry (Airflow 3.2+ declarative forms)."""
        schema: dict[str, Any] = dict(self.schema)
        schema["type"] = self.type if self.required else [self.type, "null"]
        if "default" not in schema and not self.required:
            schema["default"] = None
        if self.secret:
            schema["format"] = "password"
        if self.section:
            schema["section"] = self.section
        return {"label": self.label, "description": self.description, "schema": schema}

    # -- reading values ----------------------------------------------------------------------------

    def parse(self, raw: Any, *, conn_type: str) -> Any:
        """Coerce a stored value to the field's type and validate it; ``None`` and ``""`` mean unset.

        A value of only whitespace is not taken for unset: it is an error, as its JSON schema says.
        """
        if raw is None or raw == "":
            if self.required:
                raise ConfigError(self.name, "is required but empty", self.fix, conn_type=conn_type)
            return None
        if isinstance(raw, str) and raw.strip() == "":
            raise self._error(
                "holds only whitespace",
                conn_type,
                self.fix if self.required else f"clear the field to leave it unset, or {self.fix}",
            )
        value = self._coerce(raw, conn_type)
        self._validate(value, self.schema, conn_type, self.name)
        return value

    def _error(self, problem: str, conn_type: str, fix: str | None = None) -> ConfigError:
        return ConfigError(self.name, problem, fix or self.fix, conn_type=conn_type)

    def _coerce(self, raw: Any, conn_type: str) -> Any:
        kind = self.type
        if kind == "string":
            if not isinstance(raw, str):
                raise self._error(f"must be a string, got {type(raw).__name__}", conn_type)
            if self.schema.get("format") == "multiline":
                return raw.strip()
            if raw != raw.strip():
                raise self._error(
                    "has leading or trailing whitespace (a space or line break pasted with the value)",
                    conn_type,
                    f"remove the whitespace; {self.fix}",
                )
            return raw
        if kind == "integer":
            if isinstance(raw, bool):
                raise self._error("must be a whole number, got a boolean", conn_type)
            if isinstance(raw, int):
                return raw
            if isinstance(raw, float) and raw.is_integer():
                return int(raw)
            if isinstance(raw, str) and re.fullmatch(r"[+-]?[0-9]+", raw):
                return int(raw)
            raise self._error(f"must be a whole number, got {_describe(raw, self.secret)}", conn_type)
        if kind == "boolean":
            if isinstance(raw, bool):
                return raw
            if isinstance(raw, str) and raw.strip().lower() in ("true", "false"):
                return raw.strip().lower() == "true"
            raise self._error("must be true or false", conn_type)
        if kind == "array":
            if isinstance(raw, str):
                text = raw.strip()
                if text.startswith("["):
                    try:
                        raw = json.loads(text)
                    except json.JSONDecodeError as exc:
                        raise self._error(f"is not a valid JSON list ({exc.msg})", conn_type) from None
                else:
                    raw = [part.strip() for part in re.split(r"[,\n]", text)]
                    raw = [part for part in raw if part]
            if not isinstance(raw, list | tuple):
                raise self._error(f"must be a list, got {type(raw).__name__}", conn_type)
            return tuple(raw)
        if kind == "object":
            if isinstance(raw, str):
                try:
                    raw = json.loads(raw)
                except json.JSONDecodeError as exc:
                    raise self._error(f"is not a valid JSON object ({exc.msg})", conn_type) from None
            if not isinstance(raw, Mapping):
                raise self._error(f"must be a JSON object, got {type(raw).__name__}", conn_type)
            return dict(raw)
        if isinstance(raw, bool) or not isinstance(raw, int | float):  # number
            raise self._error("must be a number", conn_type)
        return raw

    def _validate(self, value: Any, schema: Mapping[str, Any], conn_type: str, where: str) -> None:
        def fail(problem: str) -> ConfigError:
            prefix = "" if where == self.name else f"{where[len(self.name) :].strip()} "
            return self._error(prefix + problem, conn_type)

        shown = _describe(value, self.secret)
        if "enum" in schema and value not in schema["enum"]:
            allowed = ", ".join(repr(v) for v in schema["enum"])
            raise fail(f"{shown} is not one of {allowed}")
        if isinstance(value, int | float) and not isinstance(value, bool):
            if "minimum" in schema and value < schema["minimum"]:
                raise fail(f"{value} is below the minimum {schema['minimum']}")
            if "maximum" in schema and value > schema["maximum"]:
                raise fail(f"{value} is above the maximum {schema['maximum']}")
        if isinstance(value, str):
            if "minLength" in schema and len(value) < schema["minLength"]:
                raise fail(f"{shown} is shorter than {schema['minLength']} characters")
            if "maxLength" in schema and len(value) > schema["maxLength"]:
                raise fail(f"is {len(value)} characters long; the limit is {schema['maxLength']}")
            if "pattern" in schema and not re.search(schema["pattern"], value):
                specific = self.explain(value) if self.explain is not None else None
                if specific:
                    raise fail(specific)
                odd = _first_unexpected_character(value)
                if odd:
                    raise fail(
                        f"contains {odd}, which does not belong in this value (a look-alike or invisible character)"
                    )
                raise fail(f"{shown} does not have the expected shape")
        if isinstance(value, tuple):
            if "maxItems" in schema and len(value) > schema["maxItems"]:
                raise fail(f"has {len(value)} entries; the limit is {schema['maxItems']}")
            if "minItems" in schema and len(value) < schema["minItems"]:
                raise fail(f"needs at least {schema['minItems']} entr{'y' if schema['minItems'] == 1 else 'ies'}")
            if schema.get("uniqueItems"):
                seen: list[Any] = []
                for index, item in enumerate(value):
                    if item in seen:
                        raise fail(f"lists the same value twice (entries {seen.index(item) + 1} and {index + 1})")
                    seen.append(item)
            items = schema.get("items", {})
            for index, item in enumerate(value):
                if items.get("type") == "string" and not isinstance(item, str):
                    raise fail(f"entry {index + 1} must be a string")
                if isinstance(item, str) and item != item.strip():
                    raise fail(f"entry {index + 1} has leading or trailing whitespace")
                self._validate(item, items, conn_type, f"{where} entry {index + 1}:")
        if isinstance(value, dict):
            if "maxProperties" in schema and len(value) > schema["maxProperties"]:
                raise fail(f"has {len(value)} entries; the limit is {schema['maxProperties']}")
            values = schema.get("additionalProperties")
            if isinstance(values, Mapping):
                for key, item in value.items():
                    if values.get("type") == "string" and not isinstance(item, str):
                        raise fail(f"value of {describe_value(key)} must be a string")
                    self._validate(item, values, conn_type, f"{where} value of {describe_value(key)}:")


# Shapes of credentials someone may paste into the wrong field: a JWT (a projected service-account token,
# an ID or Entra token), a Google access token, an AWS key id, a PEM key; and long base64 runs (an AWS
# secret key, a client secret) mixing upper case, lower case and digits, with few slashes (not a path).
_CREDENTIAL_SHAPE = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}|ya29\.|(?:AKIA|ASIA)[A-Z0-9]{16}|-----BEGIN")
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/=]{40,}")


def _looks_like_a_credential(text: str) -> bool:
    if _CREDENTIAL_SHAPE.search(text):
        return True
    for match in _BASE64_RUN.finditer(text):
        run = match.group()
        if (
            run.count("/") * 10 <= len(run)
            and re.search("[A-Z]", run)
            and re.search("[a-z]", run)
            and re.search("[0-9]", run)
        ):
            return True
    return False


def describe_value(value: Any, secret: bool = False) -> str:
    """How an error message may show a value: never a secret field's, never one shaped like a credential."""
    if secret:
        return "the value"
    text = repr(value)
    if _looks_like_a_credential(text):
        return "a value shaped like a credential (not shown)"
    return text if len(text) <= 80 else text[:77] + "..."


_describe = describe_value


def _first_unexpected_character(value: str) -> str | None:
    """The first non-ASCII or control character of ``value``, named (``U+200B ZERO WIDTH SPACE at position 5``)."""
    for position, char in enumerate(value, start=1):
        if not " " <= char <= "~":
            name = unicodedata.name(char, "control character")
            return f"U+{ord(char):04X} {name} at position {position}"
    return None


def read_extra(extra: Mapping[str, Any] | str | None, conn_type: str, names: Sequence[str]) -> dict[str, Any]:
    """Raw values for ``names`` from a connection's extra.

    Plain keys win; legacy ``extra__<conn_type>__<name>`` keys are read when the plain key is unset;
    ``None`` and ``""`` (what an untouched form writes) mean unset.
    """
    if extra is None or extra == "":
        extra = {}
    if isinstance(extra, str):
        try:
            extra = json.loads(extra)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                "extra",
                f"is not valid JSON ({exc.msg})",
                "store the extra as a JSON object",
                conn_type=conn_type,
            ) from None
    if not isinstance(extra, Mapping):
        raise ConfigError("extra", "must be a JSON object", "store the extra as a JSON object", conn_type=conn_type)
    values: dict[str, Any] = {}
    for name in names:
        value = extra.get(name)
        if value is None or value == "":
            value = extra.get(f"extra__{conn_type}__{name}")
        values[name] = None if value == "" else value
    return values


@dataclass(frozen=True, kw_only=True)
class ConnectionForm:
    """A connection type: identity in the providers manager, its form, and its fields."""

    conn_type: str
    hook_name: str
    hook_class_name: str
    fields: tuple[Field, ...]
    hidden_fields: tuple[str, ...] = ("host", "port", "schema", "login", "password")
    relabeling: Mapping[str, str] = field(default_factory=dict)
    placeholders: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", self.conn_type) or "__" in self.conn_type:
            raise ValueError(f"connection type {self.conn_type!r} must match ^[a-z][a-z0-9_]*$ without '__'")
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate field names in {self.conn_type}")
        unknown = set(self.hidden_fields) - set(_STANDARD_FIELDS)
        if unknown:
            raise ValueError(f"unknown standard fields {sorted(unknown)}")

    def field(self, name: str) -> Field:
        for candidate in self.fields:
            if candidate.name == name:
                return candidate
        raise KeyError(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def parse(self, extra: Mapping[str, Any] | str | None) -> dict[str, Any]:
        """Every field's validated value (``None`` when unset) from a connection's extra."""
        raw = read_extra(extra, self.conn_type, self.names)
        return {f.name: f.parse(raw[f.name], conn_type=self.conn_type) for f in self.fields}

    # -- Airflow 3.2+ provider info -----------------------------------------------------------------

    def ui_field_behaviour(self) -> dict[str, Any]:
        behaviour: dict[str, Any] = {"hidden-fields": list(self.hidden_fields)}
        if self.relabeling:
            behaviour["relabeling"] = dict(self.relabeling)
        if self.placeholders:
            behaviour["placeholders"] = dict(self.placeholders)
        return behaviour

    def provider_connection_type(self) -> dict[str, Any]:
        """The ``connection-types`` item of ``get_provider_info()``."""
        return {
            "connection-type": self.conn_type,
            "hook-class-name": self.hook_class_name,
            "hook-name": self.hook_name,
            "ui-field-behaviour": self.ui_field_behaviour(),
            "conn-fields": {f.name: f.conn_field() for f in self.fields},
        }

    # -- Airflow 2.11-3.1 legacy form ------------------------------------------------------------------

    def legacy_ui_field_behaviour(self) -> dict[str, Any]:
        """What ``get_ui_field_behaviour()`` returns on Airflow 2.11-3.1."""
        return {
            "hidden_fields": list(self.hidden_fields),
            "relabeling": dict(self.relabeling),
            "placeholders": dict(self.placeholders),
        }

    def legacy_widgets(self) -> dict[str, Any]:
        """What ``get_connection_form_widgets()`` returns on Airflow 2.11-3.1 (wtforms fields)."""
        from flask_appbuilder.fieldwidgets import BS3PasswordFieldWidget, BS3TextFieldWidget
        from flask_babel import lazy_gettext
        from wtforms import IntegerField, PasswordField, StringField
        from wtforms.validators import NumberRange, Optional, any_of

        widgets: dict[str, Any] = {}
        for f in self.fields:
            validators: list[Any] = [Optional()]
            description = f.description
            if f.type == "integer":
                validators.append(NumberRange(min=f.schema.get("minimum"), max=f.schema.get("maximum")))
                widgets[f.name] = IntegerField(
                    lazy_gettext(f.label),
                    widget=BS3TextFieldWidget(),
                    validators=validators,
                    description=description,
                )
                continue
            if "enum" in f.schema:
                validators.append(any_of(list(f.schema["enum"])))
            if f.type == "array":
                description += " (comma-separated, or a JSON list)"
            elif f.type == "object":
                description += " (a JSON object)"
            if f.secret:
                widgets[f.name] = PasswordField(
                    lazy_gettext(f.label),
                    widget=BS3PasswordFieldWidget(),
                    validators=validators,
                    description=description,
                )
            else:
                widgets[f.name] = StringField(
                    lazy_gettext(f.label),
                    widget=BS3TextFieldWidget(),
                    validators=validators,
                    description=description,
                )
        return widgets

    # -- docs -------------------------------------------------------------------------------------------

    def docs_table(self) -> str:
        """A Markdown table of the fields, for the docs (kept in sync by a test)."""
        rows = ["| Extra key | Label | Type | Accepts | Description |", "|---|---|---|---|---|"]
        for f in self.fields:
            accepts = []
            for key in ("enum", "minimum", "maximum", "maxLength", "maxItems", "pattern"):
                if key in f.schema:
                    accepts.append(f"{key} `{f.schema[key]}`" if key == "pattern" else f"{key} {f.schema[key]}")
            default = f.schema.get("default")
            if default is not None:
                accepts.append(f"default {default}")
            text = f.description.replace("|", "\\|").replace("\n", " ")
            rows.append(
                f"| `{f.name}` | {f.label} | {f.type} | {'; '.join(accepts).replace('|', chr(92) + '|')} | {text} |"
            )
        return "\n".join(rows) + "\n"


#: The per-connection opt-out of the host credential cache (``cache.py``), the same field in every form.
CREDENTIAL_CACHE = Field(
    name="credential_cache",
    label="Credential cache",
    description=(
        "Optional. host (default): the worker's task processes share this identity's tokens through the "
        "host credential cache ([workload_identity] credential_cache); process: shared within one process "
        "only; off: the same as process. A connection can keep its identity out of the host cache, not "
        "turn the cache on where the deployment turned it off."
    ),
    schema={"type": "string", "enum": ["host", "process", "off"]},
    fix="use host, process or off (or leave it unset for the deployment's setting)",
    section="Ambient identity",
)
