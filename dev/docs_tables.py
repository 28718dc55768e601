"""Regenerate the field tables in docs/*.md from the field declarations: ``uv run python dev/docs_tables.py``."""

from __future__ import annotations

import re
from pathlib import Path

from airflow_workload_identity.get_provider_info import FORMS

DOCS = Path(__file__).resolve().parents[1] / "docs"


def main() -> None:
    for path in DOCS.glob("*.md"):
        text = original = path.read_text()
        for form in FORMS:
            start, end = f"<!-- fields:{form.conn_type}:start -->\n", f"<!-- fields:{form.conn_type}:end -->"
            replacement = start + form.docs_table() + end
            text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _, r=replacement: r, text, flags=re.S)
        if text != original:
            path.write_text(text)
            print(f"updated {path}")


if __name__ == "__main__":
    main()
