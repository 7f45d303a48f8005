"""The console's cursor pager in a real headless Chromium (issue 16), against a
`durable ui` process over a file store: Next and Previous through pages of 20 (the
cursor, and the trail Previous walks, in the URL), the id prefix, the name filter, and
a forged cursor that gets a 400 page."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import pytest

import durable

sys.path.insert(0, str(Path(__file__).parent))
from _procs import LineProcess, child_env
from test_console_browser import REPO, browser, expect, page, pytestmark

# the browser's fixtures (Chromium, a fresh context per test) and marks (skipped
# without Chromium or Playwright)
__all__ = ["browser", "page", "pytestmark"]

PAGED = 45  # "page-000".., then five "zz-*": 50 instances, pages of 20


def page_ids(first: int, stop: int) -> list[str]:
    return [f"page-{i:03d}" for i in range(first, stop)]


async def populate(url: str) -> None:
    async with durable.Client(url) as client:
        for i in range(PAGED):
            await client.start("paging", i, instance_id=f"page-{i:03d}")
        for i in range(5):
            await client.start("other", i, instance_id=f"zz-{i}")


@pytest.fixture(scope="module")
def console_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("paging")
    store = f"file://{root / 'store'}"
    with ThreadPoolExecutor(1) as pool:  # (Playwright's sync API holds this thread's loop)
        pool.submit(anyio.run, populate, store).result()
    argv = [sys.executable, "-m", "durable", "ui", "--listen", "127.0.0.1:0", "--store", store]
    ui = LineProcess("ui", argv, root / "ui.log", child_env(), REPO)
    try:
        line = ui.wait_for(r"listening on http://", "the console's address")
        yield line.rsplit(" ", 1)[1].rstrip("/")
    finally:
        ui.cleanup()


def shown(page: Any) -> list[str]:
    ids: list[str] = page.locator("#instances td.id").all_inner_texts()
    return ids


def test_next_and_previous_by_cursor(console_url: str, page: Any) -> None:
    """Issue 16: Next follows the cursor to the last page; Previous walks back through
    the trail in the URL to the first page, which has no Previous."""
    page.goto(console_url + "/?size=20")
    expect(page.locator("#instances tbody tr")).to_have_count(20)
    assert shown(page) == page_ids(0, 20)
    assert page.locator("#prev").count() == 0
    expect(page.locator("#showing")).to_contain_text("1\u201320")
    expect(page.locator("#showing")).to_contain_text("more follow")

    page.click("#next")
    expect(page.locator("#showing")).to_contain_text("21\u201340")
    assert shown(page) == page_ids(20, 40)
    assert "cursor=" in page.url
    assert "back=" in page.url
    page.click("#next")
    expect(page.locator("#showing")).to_contain_text("41\u201350")
    assert shown(page) == page_ids(40, PAGED) + [f"zz-{i}" for i in range(5)]
    expect(page.locator("#showing")).to_contain_text("the last page")
    assert page.locator("#next").count() == 0

    page.click("#prev")
    expect(page.locator("#showing")).to_contain_text("21\u201340")
    assert shown(page) == page_ids(20, 40)
    page.click("#prev")
    expect(page.locator("#showing")).to_contain_text("1\u201320")
    assert shown(page) == page_ids(0, 20)
    assert page.locator("#prev").count() == 0
    page.go_back()  # the browser's history holds the pages too: their URLs say where
    expect(page.locator("#showing")).to_contain_text("21\u201340")
    assert shown(page) == page_ids(20, 40)


def test_id_prefix_and_name_filter_page(console_url: str, page: Any) -> None:
    """Issue 16: the id prefix lists only its ids (a store listing of the prefix), with
    Next by cursor; the name filter pages the same way."""
    page.goto(console_url + "/?size=20")
    page.fill("input[name=prefix]", "page-01")
    page.click("#filters button[type=submit]")
    expect(page.locator("#showing")).to_contain_text("with this id prefix")
    assert shown(page) == page_ids(10, 20)
    assert page.locator("#next").count() == 0

    page.fill("input[name=prefix]", "page-")
    page.click("#filters button[type=submit]")
    expect(page.locator("#instances tbody tr")).to_have_count(20)
    page.click("#next")
    page.click("#next")
    expect(page.locator("#instances tbody tr")).to_have_count(5)
    assert shown(page) == page_ids(40, PAGED)
    page.click("#prev")
    expect(page.locator("#instances tbody tr")).to_have_count(20)
    assert shown(page) == page_ids(20, 40)

    page.goto(console_url + "/?size=20&name=OTHER")
    assert shown(page) == [f"zz-{i}" for i in range(5)]
    expect(page.locator("#showing")).to_contain_text("looked at for this page")


def test_a_forged_cursor_gets_a_400_page(console_url: str, page: Any) -> None:
    """Issue 16: a cursor someone typed or forged is a clear 400 page, not a 500."""
    response = page.goto(console_url + "/?cursor=W2ZhbHNlLDAsIi4uL3NlY3JldCJd")
    assert response is not None
    assert response.status == 400
    expect(page.locator("#error")).to_contain_text("not a listing cursor")
    response = page.goto(console_url + "/?back=~.junk")
    assert response is not None
    assert response.status == 400
