"""The docs' field tables are the ones generated from the field declarations."""

from __future__ import annotations

import re
from pathlib import Path

from airflow_workload_identity.get_provider_info import FORMS

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_every_connection_type_has_its_generated_field_table_in_the_docs() -> None:
    text = "\n".join(p.read_text() for p in DOCS.glob("*.md"))
    for form in FORMS:
        match = re.search(
            rf"<!-- fields:{form.conn_type}:start -->\n(.*?)<!-- fields:{form.conn_type}:end -->", text, re.S
        )
        assert match, f"docs have no field table for {form.conn_type}"
        assert match.group(1) == form.docs_table(), "regenerate the table: FORM.docs_table()"
