"""The Space in a real browser: Debian's chromium driven by Playwright types, generates, switches adapter."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.test_space import PROMPT, free_port, make_adapter, reference

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
NEW_TOKENS = 20
# A base answer long enough to push an unwrapped table's tuned column off a 1280 px screen.
LONG_BASE = " ".join(["The weather today is mild with a light breeze from the west and some clouds"] * 12)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium: apt-get install -y chromium"),
]


@pytest.fixture(scope="module")
def space(tiny_base, tmp_path_factory):
    """The launched Space with two adapters, and those adapters' folders."""
    pytest.importorskip("playwright.sync_api")
    from hubstyle.space import SpaceSettings, launch

    root = tmp_path_factory.mktemp("browser_adapters")
    adapters = {name: str(make_adapter(tiny_base, root / name, seed)) for name, seed in (("bard", 1), ("pirate", 2))}
    settings = SpaceSettings(
        base=str(tiny_base),
        adapters=adapters,
        demo_rows=[{"prompt": "To be, or not", "base": "to be the the", "tuned": "to be, thou knave"},
                   {"prompt": "What is the weather like?", "base": LONG_BASE, "tuned": "The heavens weep, my lord."}],
        examples=["Shall I compare thee"],
        max_new_tokens=32,
        bf16=False,
    )
    demo = launch(settings, host="127.0.0.1", port=free_port(), prevent_thread_lock=True, quiet=True)
    yield demo, adapters
    demo.close()


def settled(page, selector: str, timeout: float = 30.0, quiet_for: float = 1.0) -> str:
    """Return the textarea's value once it is non-empty, the app is not generating, and it has stopped changing.

    Streaming can show a partial value before Gradio marks the component busy, so a value only counts once it
    has stayed the same for `quiet_for` seconds with nothing pending.
    """
    deadline = time.monotonic() + timeout
    area = page.locator(f"{selector} textarea")
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        busy = page.locator(".generating, .pending").count()
        value = area.input_value()
        if value != last or busy:
            last, since = value, time.monotonic()
        elif value and time.monotonic() - since >= quiet_for:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{selector} did not fill within {timeout} s (value so far: {area.input_value()!r})")


def set_number(page, elem_id: str, value: str, attempts: int = 4) -> None:
    """Type `value` into a slider's number box until the slider itself shows it (a typed value can be lost
    when the box is re-rendered while the page settles)."""
    from playwright.sync_api import expect

    for attempt in range(attempts):
        box = page.locator(f"#{elem_id} input[type=number]")
        box.fill(value)
        box.press("Enter")
        box.blur()
        try:
            # the slider's own range input moves only once the app state holds the typed value
            expect(page.locator(f"#{elem_id} input[type=range]")).to_have_value(value, timeout=3000)
            return
        except AssertionError:
            if attempt == attempts - 1:
                raise


def clear_outputs(page) -> None:
    """Blank both columns in the page, so the next run is seen filling them again."""
    page.evaluate("""() => { for (const id of ['base-output', 'tuned-output']) {
        const area = document.querySelector(`#${id} textarea`); area.value = ''; } }""")


def test_generate_and_switch_adapter_in_chromium(space, tiny_base, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    demo, adapters = space
    requests: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.on("request", lambda request: requests.append(request.url))
            page.goto(demo.local_url, wait_until="networkidle")
            expect(page.locator("#demo-table")).to_contain_text("to be, thou knave")
            # the tuned column is on screen at 1280 px, next to the long base answer
            for text in ("The heavens weep, my lord.", LONG_BASE[:40]):
                cell = page.locator("#demo-table td", has_text=text).first
                box = cell.bounding_box()
                assert box is not None and box["width"] > 50, text
                assert 0 <= box["x"] and box["x"] + box["width"] <= 1280, (text, box)
            page.locator("#demo-table").screenshot(path=str(tmp_path / "demo_table.png"))

            page.locator("#prompt textarea").fill(PROMPT)
            page.get_by_text("Generation settings").click()
            for elem_id, value in (("temperature", "0"), ("max-new", str(NEW_TOKENS))):
                set_number(page, elem_id, value)
            page.locator("#generate").click()
            base_text = settled(page, "#base-output")
            bard_text = settled(page, "#tuned-output")

            page.locator("#adapter input").click()
            page.get_by_role("option", name="pirate").click()
            expect(page.locator("#tuned-output")).to_contain_text("With the 'pirate' adapter")  # label follows
            clear_outputs(page)
            page.locator("#generate").click()
            pirate_text = settled(page, "#tuned-output")
            base_again = settled(page, "#base-output")

            shot = tmp_path / "space.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()

    # the textarea shows what the models wrote (the browser normalises line endings only)
    assert base_text.strip() == reference(tiny_base, None, PROMPT, NEW_TOKENS).replace("\r", "").strip()
    assert bard_text.strip() == reference(tiny_base, adapters["bard"], PROMPT, NEW_TOKENS).replace("\r", "").strip()
    assert pirate_text.strip() == reference(tiny_base, adapters["pirate"], PROMPT, NEW_TOKENS).replace("\r", "").strip()
    assert pirate_text != bard_text and base_again == base_text
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    outside = [url for url in requests if not url.startswith((demo.local_url, "data:", "blob:"))]
    assert outside == [], f"the page fetched from outside this machine: {outside[:5]}"
