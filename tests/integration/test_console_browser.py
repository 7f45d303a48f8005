"""The web console in a real headless Chromium (the system's, driven by Playwright),
against `durable ui` and `durable worker` processes sharing a file store: list, filter,
open, every action, the login, and a hostile payload that must stay text.

Set DURABLE_CONSOLE_SCREENSHOTS=DIR to save the README's screenshots there.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest

import durable

sys.path.insert(0, str(Path(__file__).parent))
import console_app
from _procs import LineProcess, child_env

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="the playwright package is not installed"
)
pytestmark = [
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="Chromium is absent (apt-get install chromium; .ci/run installs it)",
    ),
    pytest.mark.timeout(180),
]
T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
WAIT_MS = 30_000  # for a state change to reach the page (worker poll + auto-refresh)
SHOTS = os.environ.get("DURABLE_CONSOLE_SCREENSHOTS")


def _run(fn: Callable[[], Awaitable[T]]) -> T:
    """Run ``fn`` on an event loop of its own thread (Playwright's sync API holds one
    in this thread)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(anyio.run, fn).result()


class Deployment:
    """A populated store, a worker running its workflows, and the console over it."""

    def __init__(self, root: Path, api_token: str | None = None) -> None:
        self.store = f"file://{root / 'store'}"
        _run(partial(console_app.populate, self.store))
        self.procs: list[LineProcess] = []
        env = child_env()
        self.worker = self._spawn(root, "worker", [
            "worker", "console_app:registry", "--solo", "--poll-interval", "0.1",
        ], env)  # fmt: skip
        self.worker.wait_for(r"^READY", "the worker's READY line")
        ui = ["ui", "--listen", "127.0.0.1:0"]
        if api_token:
            ui += ["--api-token", api_token]
        self.ui = self._spawn(root, "ui", ui, env)
        line = self.ui.wait_for(r"listening on http://", "the console's address")
        self.url = line.rsplit(" ", 1)[1].rstrip("/")

    def _spawn(self, root: Path, name: str, args: list[str], env: dict[str, str]) -> LineProcess:
        argv = [sys.executable, "-m", "durable", *args, "--store", self.store]
        proc = LineProcess(name, argv, root / f"{name}.log", env, REPO)
        self.procs.append(proc)
        return proc

    def describe(self, instance_id: str) -> durable.WorkflowState:
        async def read() -> durable.WorkflowState:
            async with durable.Client(self.store) as client:
                return await client.get_handle(instance_id).describe()

        return _run(read)

    def history(self, instance_id: str) -> list[Any]:
        async def read() -> list[Any]:
            async with durable.Client(self.store) as client:
                return await client.get_handle(instance_id).history()

        return _run(read)

    def raise_event(self, instance_id: str, name: str, data: Any) -> None:
        async def send() -> None:
            async with durable.Client(self.store) as client:
                await client.get_handle(instance_id).raise_event(name, data)

        _run(send)

    def close(self) -> None:
        for proc in self.procs:
            proc.cleanup()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    running = Deployment(tmp_path_factory.mktemp("console"))
    try:
        yield running
    finally:
        running.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context per test; any dialog (an injected alert) fails the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    dialogs: list[str] = []
    opened.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    yield opened
    context.close()
    assert dialogs == [], f"a dialog opened: {dialogs}"


def expect(locator: Any) -> Any:
    return playwright_api.expect(locator)


def status_badge(page: Any) -> Any:
    return page.locator(".title-row .badge")


def confirm(page: Any, action: str, **fields: str) -> None:
    """Click an action's button, fill its confirm page, confirm."""
    page.click(f"#action-{action}")
    expect(page.locator("#confirm")).to_be_visible()
    for name, value in fields.items():
        page.fill(f"[name={name}]", value)
    page.click("#confirm")


def shot(page: Any, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / name), full_page=True)


def test_list_filter_and_open(deployment: Deployment, page: Any) -> None:
    """The list shows every instance; status and name filter it; a row opens the
    instance page with its history as a timeline and a table."""
    page.goto(deployment.url + "/")
    rows = page.locator("#instances tbody tr")
    expect(rows.first).to_be_visible()
    assert rows.count() == 10
    shot(page, "list.png")

    page.select_option("select[name=status]", "FAILED")
    page.click("#filters button[type=submit]")
    expect(rows).to_have_count(1)
    expect(rows.first.locator(".name")).to_have_text("charge_card")

    page.select_option("select[name=status]", "")
    page.fill("input[name=name]", "GREET")
    page.click("#filters button[type=submit]")
    expect(rows).to_have_count(2)

    page.goto(deployment.url + "/")
    page.click("text=order-1")
    expect(page.locator("#instance-id")).to_have_text("order-1")
    expect(status_badge(page)).to_have_text("COMPLETED")
    expect(page.locator("svg.timeline rect.bar").first).to_be_visible()
    expect(page.locator("#history tbody tr")).to_have_count(len(deployment.history("order-1")))
    expect(page.locator("#memo")).to_contain_text("bin-4")
    shot(page, "instance.png")
    page.click("#children a")  # the child's page, by its link
    expect(page.locator("#parent")).to_have_text("order-1")


def test_hostile_payload_renders_as_text(deployment: Deployment, page: Any) -> None:
    """Bug pinned: markup in a workflow's name, input, custom status and output shows
    as text; no element it describes exists and no script it holds runs."""
    page.goto(deployment.url + "/")
    expect(page.locator("#instances")).to_contain_text(console_app.HOSTILE_NAME)
    page.click(f"text={console_app.HOSTILE_ID}")
    expect(page.locator("#instance-id")).to_have_text(console_app.HOSTILE_ID)
    expect(page.locator("#workflow-name")).to_have_text(console_app.HOSTILE_NAME)
    expect(page.locator("#input")).to_contain_text('<script id=\\"pwned\\">')  # JSON-quoted
    expect(page.locator("#custom-status")).to_contain_text("onerror=alert(1)")
    for injected in ("#pwned", "#pwned-img", "#pwned-name"):
        assert page.locator(injected).count() == 0, injected
    assert page.title() != "pwned"


def test_raise_event_completes_a_waiting_workflow(deployment: Deployment, page: Any) -> None:
    """Raise event: confirmed, sent, and the page follows the run to its end."""
    page.goto(f"{deployment.url}/instances/approval-0")
    expect(status_badge(page)).to_have_text("RUNNING")
    confirm(page, "raise-event", event_name="approve", data='{"ok": "yes"}')
    expect(page.locator("#notice")).to_have_text("The event was sent.")
    expect(status_badge(page)).to_have_text("COMPLETED", timeout=WAIT_MS)  # auto-refresh
    expect(page.locator("#output")).to_contain_text('"ok": "yes"')


def test_pages_follow_running_instances(deployment: Deployment, page: Any) -> None:
    """The list and the instance page refresh themselves while an instance runs: an
    event sent from elsewhere shows its effect with no reload or navigation."""
    page.goto(f"{deployment.url}/instances/approval-3")
    expect(status_badge(page)).to_have_text("RUNNING")
    page.evaluate("window.notReloaded = true")
    deployment.raise_event("approval-3", "approve", "from elsewhere")
    expect(status_badge(page)).to_have_text("COMPLETED", timeout=WAIT_MS)
    expect(page.locator("#output")).to_contain_text("from elsewhere")
    assert page.evaluate("window.notReloaded") is True
    page.goto(f"{deployment.url}/?name=approval")
    assert page.locator("#live").get_attribute("data-refresh") != "0"  # approvals still run


def test_suspend_then_resume(deployment: Deployment, page: Any) -> None:
    """Suspend and resume, each confirmed first."""
    page.goto(f"{deployment.url}/instances/approval-1")
    confirm(page, "suspend", reason="maintenance")
    expect(status_badge(page)).to_have_text("SUSPENDED", timeout=WAIT_MS)
    confirm(page, "resume")
    expect(status_badge(page)).to_have_text("RUNNING", timeout=WAIT_MS)


def test_terminate_after_cancelling_once(deployment: Deployment, page: Any) -> None:
    """Cancel on the confirm page does nothing; confirming terminates."""
    page.goto(f"{deployment.url}/instances/approval-2")
    page.click("#action-terminate")
    page.click("#cancel")
    expect(status_badge(page)).to_have_text("RUNNING")
    assert deployment.describe("approval-2").status is durable.WorkflowStatus.RUNNING
    confirm(page, "terminate", reason="ordered cancelled")
    expect(status_badge(page)).to_have_text("TERMINATED", timeout=WAIT_MS)
    expect(page.locator("#failure")).to_contain_text("ordered cancelled")


def test_rerun_from_a_step_picked_in_the_timeline(deployment: Deployment, page: Any) -> None:
    """Clicking a step in the timeline of an ended instance offers a rerun from it;
    confirmed, a new run replays the history before it and ends again."""
    before = deployment.history("greet-0")[0].run_id
    page.goto(f"{deployment.url}/instances/greet-0")
    step = page.locator("svg.timeline .activity a.step").first
    event_id = step.get_attribute("data-event")
    step.click()
    expect(page.locator("select[name=from_event]")).to_have_value(event_id)
    page.click("#confirm")
    expect(page.locator("#notice")).to_have_text("The rerun started.")
    expect(status_badge(page)).to_have_text("COMPLETED", timeout=WAIT_MS)
    assert deployment.history("greet-0")[0].run_id != before


def test_purge(deployment: Deployment, page: Any) -> None:
    """Purge, confirmed, deletes the instance: the list no longer has it."""
    page.goto(f"{deployment.url}/instances/greet-1")
    confirm(page, "purge")
    page.wait_for_url(f"{deployment.url}/?purged=1")
    expect(page.locator("#instances")).not_to_contain_text("greet-1")
    page.goto(f"{deployment.url}/instances/greet-1")
    expect(page.locator("#error")).to_contain_text("no such instance")


def test_api_token_login(tmp_path: Path, browser: Any) -> None:
    """With --api-token, the browser is sent to sign in; a wrong token is refused, the
    right one opens the pages."""
    guarded = Deployment(tmp_path, api_token="let-me-in")
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(guarded.url + "/instances/order-1")
        page.wait_for_url(guarded.url + "/login")
        page.fill("input[name=token]", "guess")
        page.click("button[type=submit]")
        expect(page.locator("#error")).to_have_text("That is not the API token.")
        page.fill("input[name=token]", "let-me-in")
        page.click("button[type=submit]")
        expect(page.locator("#instances")).to_contain_text("order-1")
    finally:
        context.close()
        guarded.close()
