"""What must be granted for a connection, as data: rendered for people, as JSON, or as shell.

Each cloud's ``policy`` module builds a :class:`Plan` (header lines and steps); the CLI renders it with
``--format text|json|shell``. Steps are trust/identity-policy statements (JSON objects) or commands.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = ["Plan", "Step"]

Kind = Literal["trust_statement", "identity_statement", "command", "note"]


@dataclass(frozen=True, kw_only=True)
class Step:
    hop: int | None
    title: str
    kind: Kind
    target: str
    content: Any  # a JSON object for statements, a string for commands and notes
    #: "platform": hop 0, the platform's own grant (IRSA role trust, GKE KSA->GSA binding, AKS federated
    #: credential), shown for reference: on a managed platform (Astro) the customer cannot edit it.
    granted_by: Literal["platform", "you"] = "you"


PLATFORM_HEADING = (
    "== What the platform grants (hop 0: the deployment's own workload identity; on Astro the platform "
    "manages this and you cannot edit it: shown so you can check it) =="
)
YOU_HEADING = "== What you grant =="


@dataclass(kw_only=True)
class Plan:
    cloud: str
    source: str | None
    header: list[str] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)

    def text(self) -> str:
        lines = list(self.header)
        platform = [s for s in self.steps if s.granted_by == "platform"]
        # hop 0 first, under its own heading; then the customer's side
        ordered = [*platform, *[s for s in self.steps if s.granted_by != "platform"]]
        for position, step in enumerate(ordered):
            if platform and position in (0, len(platform)):
                lines += ["", PLATFORM_HEADING if position == 0 else YOU_HEADING]
            if step.kind == "note":
                lines.append(f"# {step.content}")
                continue
            if step.title:
                lines += ["", f"# {step.title}"]
            if step.kind == "command":
                lines.append(step.content)
            else:
                where = "trust policy" if step.kind == "trust_statement" else "identity policy"
                lines.append(f"Add to the {where} of {step.target}:")
                lines.append(json.dumps(step.content, indent=2))
        return "\n".join(lines)

    def json(self) -> str:
        return json.dumps(
            {"cloud": self.cloud, "source": self.source, "steps": [asdict(s) for s in self.steps]}, indent=2
        )

    def shell(self) -> str:
        """Commands as they are; statements as JSON files to merge into the named policies."""
        lines = ["#!/usr/bin/env bash", f"# {self.cloud}: what this connection needs (source: {self.source})"]
        for index, step in enumerate(self.steps, start=1):
            if step.granted_by == "platform":  # not the customer's to run: shown, commented out
                lines.append(f"# {PLATFORM_HEADING}")
                body = step.content if isinstance(step.content, str) else json.dumps(step.content, indent=2)
                lines += [f"# {step.title}" if step.title else "#", *(f"#   {line}" for line in body.splitlines())]
            elif step.kind == "note":
                lines.append(f"# {step.content}")
            elif step.kind == "command":
                lines += [*([f"# {step.title}"] if step.title else []), step.content]
            else:
                name = re.sub(r"[^A-Za-z0-9]+", "-", step.target.rsplit("/", 1)[-1]).strip("-") or "policy"
                where = "trust" if step.kind == "trust_statement" else "identity"
                action = f"merge this statement into the {where} policy of {step.target}"
                lines += [
                    f"# {step.title}: {action}" if step.title else f"# {action[0].upper()}{action[1:]}",
                    f"cat > step{index}-{where}-{name}.json <<'JSON'",
                    json.dumps(step.content, indent=2),
                    "JSON",
                ]
        return "\n".join(lines) + "\n"
