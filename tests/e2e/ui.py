"""The Add/Edit Connection dialog of the Airflow 3.3.2 UI, as Playwright sees it.

Markup (React + Chakra UI, REFERENCE 1.11): one accordion item per ``schema.section`` (trigger id ending
in ``:trigger:<section>``; "standardFields" and "extraJson" are Airflow's own), opened one at a time;
each package field is a ``[data-scope=field][data-part=root]`` holding an element with id
``element_<name>``, its ``label`` and its ``[data-part=helper-text]`` (the description).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from playwright.sync_api import Locator, Page, expect

STANDARD = "standardFields"
EXTRA_JSON = "extraJson"


def _text(value: str) -> str:
    return " ".join(value.split())


@dataclass
class ConnectionDialog:
    page: Page

    @classmethod
    def add(cls, page: Page, conn_id: str) -> ConnectionDialog:
        """Connections → Add Connection, with the list behind it filtered to ``conn_id`` (not there yet), so
        that what other tests created does not show in the pictures."""
        page.goto("/connections")
        with page.expect_response(lambda r: "/api/v2/connections?" in r.url and conn_id in r.url):
            page.get_by_placeholder(re.compile("^Search Connections")).fill(conn_id)
        expect(page.locator("tbody tr")).to_have_count(0)
        page.click("button:has-text('Add Connection')")
        dialog = cls(page)
        expect(dialog.root.locator("input[name=connection_id]")).to_be_visible()
        return dialog

    @classmethod
    def edit(cls, page: Page, conn_id: str) -> ConnectionDialog:
        page.goto("/connections")
        page.locator(f"tr:has-text('{conn_id}') button[aria-label='Edit Connection']").click()
        dialog = cls(page)
        expect(dialog.root.locator("input[name=connection_id]")).to_have_value(conn_id)
        return dialog

    @property
    def root(self) -> Locator:
        return self.page.locator("[role=dialog]")

    @property
    def save_button(self) -> Locator:
        return self.root.locator("button:has-text('Save')")

    # --- connection id and type

    def set_id(self, conn_id: str) -> None:
        self.root.locator("input[name=connection_id]").fill(conn_id)

    def choose_type(self, hook_name: str) -> None:
        """Type the hook name into the Connection Type combobox and take the (single) match."""
        combobox = self.root.locator("input[role=combobox]").first
        combobox.click()
        combobox.fill(hook_name)
        expect(self.page.get_by_role("option", name=hook_name, exact=True)).to_be_visible()
        combobox.press("Enter")
        expect(self.root.get_by_text(hook_name, exact=True)).to_be_visible()
        expect(self.trigger(EXTRA_JSON)).to_be_visible()

    # --- sections

    def trigger(self, section: str) -> Locator:
        return self.root.locator(f"button[data-part=item-trigger][id$=':trigger:{section}']")

    def sections(self) -> list[str]:
        """Section keys of the accordion, in order."""
        ids = self.root.locator("button[data-part=item-trigger]").evaluate_all("els => els.map(e => e.id)")
        return [re.sub(r"^.*:trigger:", "", value) for value in ids]

    def open(self, section: str) -> None:
        trigger = self.trigger(section)
        if trigger.get_attribute("aria-expanded") != "true":
            trigger.click()
        expect(trigger).to_have_attribute("aria-expanded", "true")

    # --- fields

    def field(self, name: str, *, standard: bool = False) -> Locator:
        """The whole field: label, widget, helper text and error text. ``standard``: one of Airflow's own
        (host, login, ...), whose widget is named after it."""
        widget = f"[name='{name}']" if standard else f"[id='element_{name}'], [name='element_{name}']"
        return self.root.locator("[data-scope=field][data-part=root]").filter(has=self.page.locator(widget))

    def widget(self, name: str) -> Locator:
        return self.root.locator(f"[id='element_{name}']")

    def field_names(self) -> list[str]:
        """Every package field the dialog renders (open or not): ``element_<name>`` is the id of text
        inputs, textareas and dropdowns, and the name of number spinners and dropdowns' hidden inputs."""
        names = self.root.locator("[id^='element_'], [name^='element_']").evaluate_all(
            "els => [...new Set(els.map(e => (e.id.startsWith('element_') ? e.id : e.name)))]"
        )
        return [value.removeprefix("element_") for value in names]

    def label(self, name: str, *, standard: bool = False) -> str:
        return _text(self.field(name, standard=standard).locator("label").first.inner_text()).removesuffix("*").strip()

    def is_required(self, name: str) -> bool:
        return self.field(name).locator("label").first.get_attribute("data-required") is not None

    def description(self, name: str) -> str:
        return _text(self.field(name).locator("[data-part=helper-text]").inner_text())

    def number(self, name: str) -> Locator:
        return self.root.locator(f"input[name='element_{name}']")

    def fill(self, name: str, value: Any) -> None:
        """Text inputs, textareas (arrays: one entry per line) and number spinners."""
        if isinstance(value, list | tuple):
            self.widget(name).fill("\n".join(value))
        elif isinstance(value, int):
            spinner = self.number(name)
            spinner.fill(str(value))
            spinner.press("Tab")  # the spinner commits (and clamps) on blur
        else:
            self.widget(name).fill(value)

    def choose(self, name: str, value: str) -> None:
        """An enum (a react-select dropdown with a hidden input holding the value)."""
        combobox = self.widget(name).locator("input[role=combobox]")
        combobox.click()
        combobox.fill(value)
        combobox.press("Enter")
        expect(self.root.locator(f"input[name='element_{name}']")).to_have_value(value)

    # --- saving and pictures

    def save(self) -> None:
        expect(self.save_button).to_be_enabled()
        self.save_button.click()
        expect(self.root).to_be_hidden()

    def screenshot(self, *paths: Path) -> None:
        """A full-page picture with the whole dialog in it: the dialog scrolls inside the page, so the
        viewport is made as tall as the dialog first (and restored after)."""
        size = self.page.viewport_size or {"width": 1400, "height": 1000}
        height = self._settled_height()
        self.page.set_viewport_size({"width": size["width"], "height": max(size["height"], height + 140)})
        try:
            self.root.evaluate("e => e.scrollIntoView({block: 'start'})")
            self.page.evaluate("document.activeElement?.blur()")  # no focus ring in the picture
            self.page.mouse.move(0, 0)  # nor a hover highlight
            for path in paths:
                path.parent.mkdir(parents=True, exist_ok=True)
                self.page.screenshot(path=str(path), full_page=True, animations="disabled", caret="hide")
        finally:
            self.page.set_viewport_size(size)

    def _settled_height(self) -> int:
        """The dialog's height once the accordion's open/close animation is over."""
        last = -1.0
        for _ in range(50):
            box = self.root.bounding_box()
            assert box is not None
            if box["height"] == last:
                return int(last)
            last = box["height"]
            self.page.wait_for_timeout(100)
        return int(last)
