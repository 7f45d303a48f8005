"""The web console over HTTP, in process (httpx on the ASGI app): pages, paging that
reads only what a page needs, actions, and attacks on each guard."""

from __future__ import annotations

import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import durable
from durable.console import create_app
from durable.store import MemoryStore

sys.path.insert(0, str(Path(__file__).parent))
import console_app
from console_app import HOSTILE, HOSTILE_ID, HOSTILE_NAME

pytestmark = pytest.mark.anyio

BASE = "http://127.0.0.1:8233"


class CountingStore(MemoryStore):
    """A memory store that counts meta reads (what a list page costs)."""

    def __init__(self) -> None:
        super().__init__()
        self.meta_reads = 0

    async def get_with_etag(self, key: str) -> tuple[bytes, str]:
        if key.endswith("/meta"):
            self.meta_reads += 1
        return await super().get_with_etag(key)


@pytest.fixture
async def populated(tmp_path: Path) -> AsyncIterator[durable.Client]:
    """A file store with one instance of each kind (see console_app.populate)."""
    url = f"file://{tmp_path / 'store'}"
    await console_app.populate(url)
    async with durable.Client(url) as client:
        yield client


def web(client: durable.Client, **options: Any) -> httpx.AsyncClient:
    app = create_app(client, secret=b"k" * 32, **options)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert found is not None, html[:2000]
    return found.group(1)


async def test_list_and_instance_pages(populated: durable.Client) -> None:
    """The list shows every instance with its status; the instance page shows state,
    failure with its stack, history rows, timeline bars, memo entries and children."""
    async with web(populated) as http:
        page = await http.get("/")
        assert page.status_code == 200
        for instance_id in ("order-1", "charge-1", "approval-0"):
            assert f'href="/instances/{instance_id}"' in page.text
        assert 'data-refresh="2000"' in page.text  # approvals run: the page refreshes

        order = (await http.get("/instances/order-1")).text
        assert "COMPLETED" in order
        assert "rerun from here" in order
        assert 'class="bar ok"' in order  # the timeline has finished steps
        assert "bin-4" in order  # a memo entry of a reserve step
        assert "/instances/order-1-" in order  # the child, linked
        assert 'data-refresh="0"' in order  # ended: no refresh

        charge = (await http.get("/instances/charge-1")).text
        assert "CardDeclined" in charge
        assert "card declined for 4200" in charge
        assert "Traceback" in charge  # the stack

        running = (await http.get("/instances/approval-0")).text
        assert "waiting for approval" in running
        assert 'id="action-raise-event"' in running
        assert 'id="action-purge"' not in running


async def test_hostile_values_render_as_text(populated: durable.Client) -> None:
    """Bug pinned: a workflow name, id, input, custom status or output holding markup
    must reach the page escaped, never as tags."""
    async with web(populated) as http:
        for url in ("/", "/instances/" + httpx.URL(f"/{HOSTILE_ID}").raw_path.decode()[1:]):
            text = (await http.get(url)).text
            assert "<script id" not in text
            assert '<img id="pwned-img"' not in text
            assert "<b id=" not in text
        page = (await http.get("/instances/o'brien&co;(x)=1")).text
        assert page.count("&lt;script id=") >= 2  # input, output, custom status
        assert "&lt;b id=&#34;pwned-name&#34;&gt;" in page
        assert "o&#39;brien&amp;co;(x)=1" in page
        assert "/instances/o%27brien%26co%3B%28x%29%3D1/rerun" in page  # quoted in links
        assert HOSTILE not in page
        assert HOSTILE_NAME not in page


async def test_a_list_page_reads_only_its_metas() -> None:
    """Bug pinned: a list page must not read every instance's meta (it did in
    Client.list): with 300 instances, one page of 20 reads 20 metas."""
    store = CountingStore()
    async with durable.Client(store) as client:
        for i in range(300):
            await client.start("wf", i, instance_id=f"i-{i:04d}")
        async with web(client) as http:
            store.meta_reads = 0
            page = await http.get("/", params={"size": 20})
            assert store.meta_reads == 20
            ids = re.findall(r'href="/instances/(i-\d+)"', page.text)
            assert ids == [f"i-{i:04d}" for i in range(20)]

            following = re.search(r'id="next" href="([^"]+)"', page.text)
            assert following is not None
            second = await http.get(following.group(1).replace("&amp;", "&"))
            ids = re.findall(r'href="/instances/(i-\d+)"', second.text)
            assert ids == [f"i-{i:04d}" for i in range(20, 40)]
            back = re.search(r'id="prev" href="([^"]+)"', second.text)
            assert back is not None
            first = await http.get(back.group(1).replace("&amp;", "&"))
            ids = re.findall(r'href="/instances/(i-\d+)"', first.text)
            assert ids == [f"i-{i:04d}" for i in range(20)]
            assert 'id="prev"' not in first.text

            last = await http.get("/", params={"size": 20, "prefix": "i-029"})
            ids = re.findall(r'href="/instances/(i-\d+)"', last.text)
            assert ids == [f"i-{i:04d}" for i in range(290, 300)]
            assert 'id="next"' not in last.text

            prefixed = await http.get("/", params={"prefix": "i-01"})
            ids = re.findall(r'href="/instances/(i-\d+)"', prefixed.text)
            assert ids == [f"i-{i:04d}" for i in range(100, 150)]


async def test_filters_by_status_and_name(populated: durable.Client) -> None:
    """Status and (part of) the name filter the list."""
    async with web(populated) as http:
        failed = (await http.get("/", params={"status": "FAILED"})).text
        assert re.findall(r'href="/instances/([^"]+)"', failed) == ["charge-1"]
        approvals = (await http.get("/", params={"name": "APPROV"})).text
        found = re.findall(r'href="/instances/([^"]+)"', approvals)
        assert found == [f"approval-{i}" for i in range(console_app.APPROVALS)]
        none = (await http.get("/", params={"status": "SUSPENDED"})).text
        assert 'id="empty"' in none
        bad = await http.get("/", params={"status": "<x>"})
        assert bad.status_code == 400


async def confirmed(http: httpx.AsyncClient, instance_id: str, action: str) -> str:
    """GET the confirm page (which changes nothing) and return its form's CSRF token."""
    page = await http.get(f"/instances/{instance_id}/{action}")
    assert page.status_code == 200, page.text
    return csrf_of(page.text)


async def test_actions_post_through_the_client(populated: durable.Client) -> None:
    """Each action, confirmed and POSTed with its CSRF token, does what it says."""
    async with web(populated) as http:
        inbox = "instances/approval-0/inbox"
        token = await confirmed(http, "approval-0", "raise-event")
        assert await populated.store.list(inbox) == []  # the confirm page sent nothing
        done = await http.post(
            "/instances/approval-0/raise-event",
            data={"csrf": token, "event_name": "approve", "data": '{"ok": true}'},
        )
        assert done.status_code == 303
        assert done.headers["location"] == "/instances/approval-0?done=raise-event"
        assert len(await populated.store.list(inbox)) == 1
        notice = (await http.get(done.headers["location"])).text
        assert "The event was sent." in notice

        for action in ("suspend", "resume", "terminate"):
            token = await confirmed(http, "approval-1", action)
            sent = await http.post(
                f"/instances/approval-1/{action}", data={"csrf": token, "reason": "r"}
            )
            assert sent.status_code == 303, sent.text
        assert len(await populated.store.list("instances/approval-1/inbox")) == 3

        bad_json = await http.post(
            "/instances/approval-2/raise-event",
            data={"csrf": token, "event_name": "approve", "data": "{not json"},
        )
        assert bad_json.status_code == 409
        assert "not JSON" in bad_json.text

        refused = await http.post("/instances/approval-2/purge", data={"csrf": token})
        assert refused.status_code == 409  # a running instance is not purged
        assert "approval-2" in await populated.store.list("instances")

        history = await populated.get_handle("charge-1").history()
        step = next(e for e in history if type(e).__name__ == "ActivityScheduled")
        rerun = await http.post(
            "/instances/charge-1/rerun", data={"csrf": token, "from_event": str(step.event_id)}
        )
        assert rerun.status_code == 303, rerun.text
        state = await populated.get_handle("charge-1").describe()
        assert state.status is durable.WorkflowStatus.PENDING  # a new run, not yet run
        wrong = await http.post("/instances/order-1/rerun", data={"csrf": token, "from_event": "0"})
        assert wrong.status_code == 409  # event 0 is not a scheduled step

        purged = await http.post("/instances/order-1/purge", data={"csrf": token})
        assert purged.status_code == 303
        assert "order-1" not in await populated.store.list("instances")
        gone = await http.get("/instances/order-1")
        assert gone.status_code == 404


async def test_csrf_is_required_and_checked(populated: durable.Client) -> None:
    """Bug pinned: an action without the form's CSRF token, with a wrong one, with the
    token of another browser's cookie, or from another origin, does nothing."""
    async with web(populated) as http:
        token = await confirmed(http, "approval-0", "terminate")
        attempts: list[dict[str, Any]] = [
            {"data": {"reason": "x"}},  # no token
            {"data": {"csrf": "0" * 64}},  # a made-up one
            {"data": {"csrf": token}, "headers": {"origin": "http://evil.example"}},
            {"data": {"csrf": token}, "headers": {"sec-fetch-site": "cross-site"}},
            {"content": b'{"csrf": "x"}', "headers": {"content-type": "application/json"}},
        ]
        for attempt in attempts:
            sent = await http.post("/instances/approval-0/terminate", **attempt)
            assert sent.status_code in (400, 403), attempt
        async with web(populated) as other:  # another browser: its own cookie
            await other.get("/")
            stolen = await other.post("/instances/approval-0/terminate", data={"csrf": token})
            assert stolen.status_code == 403
        assert await populated.store.list("instances/approval-0/inbox") == []
        state = await populated.get_handle("approval-0").describe()
        assert state.status is durable.WorkflowStatus.RUNNING


async def test_api_token_guards_pages_and_actions(populated: durable.Client) -> None:
    """Bug pinned: with --api-token, no page, form or action answers without it."""
    async with web(populated, api_token="s3cret") as http:
        for path in ("/", "/instances/order-1", "/instances/order-1/purge"):
            assert (await http.get(path)).status_code == 401
            browser = await http.get(path, headers={"accept": "text/html"})
            assert browser.status_code == 303
            assert browser.headers["location"] == "/login"
        assert (await http.post("/instances/order-1/purge", data={})).status_code == 401
        wrong = await http.get("/", headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401
        forged = await http.get("/", headers={"cookie": "durable_session=s3cret"})
        assert forged.status_code == 401
        assert (await http.get("/static/console.css")).status_code == 200
        right = await http.get("/", headers={"authorization": "Bearer s3cret"})
        assert right.status_code == 200

        login = await http.get("/login")
        token = csrf_of(login.text)
        refused = await http.post("/login", data={"csrf": token, "token": "guess"})
        assert refused.status_code == 401
        assert "durable_session" not in http.cookies
        signed_in = await http.post("/login", data={"csrf": token, "token": "s3cret"})
        assert signed_in.status_code == 303
        assert (await http.get("/instances/order-1")).status_code == 200
    assert "order-1" in await populated.store.list("instances")


async def test_hostile_paths_and_hosts(populated: durable.Client) -> None:
    """Bug pinned: ids that climb out of the store, encoded slashes, unknown actions,
    files outside the static folder and a rebinding Host header get nowhere."""
    async with web(populated) as http:
        # (dot segments encoded: the client would resolve them itself, an attacker won't)
        for path in ("/instances/%2E%2E", "/instances/.meta", "/instances/a%5Cb",
                     "/instances/%2E%2E/purge", "/instances/%2E"):  # fmt: skip
            assert (await http.get(path)).status_code == 400, path
        for path in ("/instances/..%2F..%2Fetc", "/instances/order-1/explode",
                     "/static/../_app.py", "/static/%2e%2e/_app.py"):  # fmt: skip
            assert (await http.get(path)).status_code == 404, path
        evil = await http.get("/", headers={"host": "rebind.evil.example:8233"})
        assert evil.status_code == 421
        listed = await http.get("/", headers={"host": "localhost:8233"})
        assert listed.status_code == 200
    async with web(populated, loopback_only=False) as http:
        assert (await http.get("/", headers={"host": "console.internal"})).status_code == 200
