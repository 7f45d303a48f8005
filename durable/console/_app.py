"""The console's Starlette app: the pages, the confirm-then-POST actions, the login.

Every page is rendered on the server by Jinja2 with autoescaping on, so whatever the
store holds (names, ids, payloads, stacks) reaches the browser as text.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, urlencode

import jinja2
from starlette.applications import Starlette
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from durable._core._state import WorkflowStatus
from durable._errors import (
    DurableError,
    InstanceNotFoundError,
    InvalidArgumentError,
    InvalidInstanceIdError,
)
from durable._ids import validate_instance_id

from ._actions import ACTIONS, ActionInputError, perform
from ._instance import load_instance, pretty
from ._listing import PAGE_SIZES, ListPage, ListQuery, list_page, parse_trail
from ._security import CSRF_COOKIE, SESSION_COOKIE, Guard, Secrets
from ._timeline import RERUNNABLE

if TYPE_CHECKING:
    from starlette.requests import Request

    from durable._client import Client

__all__ = ["create_app"]

HERE = Path(__file__).parent
MAX_FORM = 1024 * 1024  # bytes of a POSTed form
REFRESH_MS = 2000  # how often a page with running instances reloads its data


def _instance_url(instance_id: str, *parts: str, **query: Any) -> str:
    url = "/instances/" + quote(instance_id, safe="")
    if parts:
        url += "/" + "/".join(quote(p, safe="") for p in parts)
    query = {k: v for k, v in query.items() if v not in ("", None)}
    return f"{url}?{urlencode(query)}" if query else url


def _list_url(query: ListQuery, **changes: Any) -> str:
    """The list's URL with ``query``'s filters, on its first page unless ``changes``
    give the ``cursor``, ``back`` (trail) and ``page`` of another."""
    fields = {
        "status": query.status.value if query.status else "", "name": query.name,
        "prefix": query.prefix, "size": query.size if query.size != 50 else "",
        "where": query.where, "cursor": "", "back": "", "page": "",
    }  # fmt: skip
    fields.update(changes)
    kept = {k: v for k, v in fields.items() if v not in ("", None, 1)}
    return f"/?{urlencode(kept)}" if kept else "/"


def _next_url(query: ListQuery, page: ListPage) -> str:
    """The URL of the page after ``page`` ("" if it is the last)."""
    if not page.next_cursor:
        return ""
    return _list_url(query, cursor=page.next_cursor, back=query.next_trail(), page=query.number + 1)


def _previous_url(query: ListQuery) -> str:
    """The URL of the page before (the first page's is First's; "" past the trail)."""
    previous = query.previous()
    if previous is None:
        return ""
    cursor, back = previous
    return _list_url(query, cursor=cursor, back=back, page=query.number - 1)


class _Console:
    """The handlers, over one client and one set of keys."""

    def __init__(self, client: Client, keys: Secrets) -> None:
        self.client = client
        self.keys = keys
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.globals.update(
            instance_url=_instance_url, list_url=_list_url, next_url=_next_url,
            previous_url=_previous_url, pretty=pretty, actions=ACTIONS,
            statuses=list(WorkflowStatus), page_sizes=PAGE_SIZES, refresh_ms=REFRESH_MS,
            auth=keys.api_token is not None,
        )  # fmt: skip

    def render(self, request: Request, template: str, status: int = 200, **values: Any) -> Response:
        """A page, with the CSRF cookie its forms need (minted on first sight)."""
        cookie = request.cookies.get(CSRF_COOKIE, "")
        fresh = not cookie
        if fresh:
            cookie = self.keys.new_csrf_cookie()
        html = self.env.get_template(template).render(csrf=self.keys.csrf_token(cookie), **values)
        response = HTMLResponse(html, status_code=status)
        if fresh:
            response.set_cookie(CSRF_COOKIE, cookie, httponly=True, samesite="strict")
        return response

    def error(self, request: Request, status: int, message: str) -> Response:
        return self.render(request, "error.html", status, title="Error", message=message)

    async def form(self, request: Request) -> dict[str, str] | None:
        """The POSTed urlencoded form (None if it is not one, or too big)."""
        if request.headers.get("content-type", "").split(";")[0].strip() != (
            "application/x-www-form-urlencoded"
        ):
            return None
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM:
                return None
        try:
            return dict(parse_qsl(body.decode(), keep_blank_values=True))
        except UnicodeDecodeError:
            return None

    # -- pages ----------------------------------------------------------------------

    async def instances(self, request: Request) -> Response:
        """The instances list: a page by cursor; a junk or forged cursor, trail,
        prefix or search is a 400 (it reaches no store call)."""
        params = request.query_params
        status_text = params.get("status", "")
        try:
            status = WorkflowStatus(status_text) if status_text else None
            size = int(params.get("size", "50"))
            number = int(params.get("page", "1"))
        except ValueError:
            return self.error(request, 400, "unknown status, page size or page number")
        try:
            query = ListQuery(
                status=status, name=params.get("name", "").strip(),
                prefix=params.get("prefix", "").strip(), size=size if size in PAGE_SIZES else 50,
                where=params.get("where", "").strip(), cursor=params.get("cursor", ""),
                trail=parse_trail(params.get("back", "")), number=number,
            )  # fmt: skip
            page = await list_page(self.client, query)
        except InvalidArgumentError as err:  # a malformed search, a stale or forged cursor
            return self.error(request, 400, str(err))
        return self.render(request, "list.html", title="Instances", query=query, page=page)

    def _instance_id(self, request: Request) -> str:
        return validate_instance_id(request.path_params["instance_id"])

    async def bad_id(self, request: Request, exc: Exception) -> Response:
        """A hostile or malformed instance id (the message says which rule it broke)."""
        return self.error(request, 400, str(exc))

    async def not_found(self, request: Request, exc: Exception) -> Response:
        return self.error(request, 404, "There is no such instance (or it was purged).")

    async def instance(self, request: Request) -> Response:
        view = await load_instance(self.client, self._instance_id(request))
        done = ACTIONS.get(request.query_params.get("done", ""))
        return self.render(
            request, "instance.html", title=view.state.instance_id, view=view,
            notice=done.done if done else "",
        )  # fmt: skip

    async def confirm(self, request: Request) -> Response:
        """The page that asks before an action (GET changes nothing)."""
        return await self._confirm(request, 200, "")

    async def _confirm(
        self, request: Request, status: int, message: str, form: dict[str, str] | None = None
    ) -> Response:
        action = ACTIONS.get(request.path_params["action"])
        if action is None:
            return self.error(request, 404, "There is no such action.")
        instance_id = self._instance_id(request)
        view = await load_instance(self.client, instance_id)
        form = form or {}
        picked = form.get("from_event") or request.query_params.get("from", "")
        steps = [e for e in view.history if isinstance(e, RERUNNABLE)]
        return self.render(
            request, "confirm.html", status, title=f"{action.title}: {instance_id}",
            action=action, view=view, error=message, form=form, picked=picked, steps=steps,
        )  # fmt: skip

    async def act(self, request: Request) -> Response:
        """Do a confirmed action: a POST whose CSRF token matches the browser's cookie."""
        form = await self.form(request)
        if form is None:
            return self.error(request, 400, "Expected a form.")
        if not self.keys.csrf_ok(request, form.get("csrf", "")):
            return self.error(request, 403, "The form's CSRF token is missing or wrong: "
                                            "reload the page and try again.")  # fmt: skip
        action = ACTIONS.get(request.path_params["action"])
        if action is None:
            return self.error(request, 404, "There is no such action.")
        instance_id = self._instance_id(request)
        try:
            await perform(self.client, instance_id, action.name, form)
        except (InvalidInstanceIdError, InstanceNotFoundError):
            raise  # the app's handlers answer these
        except (DurableError, ActionInputError, ValueError) as err:
            return await self._confirm(request, 409, str(err), form)
        if action.name == "purge":
            return RedirectResponse("/?purged=1", status_code=303)
        return RedirectResponse(_instance_url(instance_id, done=action.name), status_code=303)

    # -- login ----------------------------------------------------------------------

    async def login_page(self, request: Request) -> Response:
        return self.render(request, "login.html", title="Sign in", error="")

    async def login(self, request: Request) -> Response:
        form = await self.form(request)
        if form is None or not self.keys.csrf_ok(request, form.get("csrf", "")):
            return self.render(request, "login.html", 403, title="Sign in",
                               error="The form expired: try again.")  # fmt: skip
        if not self.keys.token_ok(form.get("token", "")):
            return self.render(request, "login.html", 401, title="Sign in",
                               error="That is not the API token.")  # fmt: skip
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            SESSION_COOKIE, self.keys.session_value(), httponly=True, samesite="strict"
        )
        return response


def create_app(
    client: Client,
    *,
    api_token: str | None = None,
    loopback_only: bool = True,
    secret: bytes | None = None,
) -> Guard:
    """The console as an ASGI app over ``client`` (which the caller opens and closes).

    ``api_token`` (if given) guards every page and action; ``loopback_only`` refuses
    requests whose Host is not a loopback name (DNS rebinding); ``secret`` signs the
    session and CSRF cookies (random per process by default).
    """
    keys = Secrets(api_token, secret)
    console = _Console(client, keys)
    routes = [
        Route("/", console.instances, methods=["GET"]),
        Route("/login", console.login_page, methods=["GET"]),
        Route("/login", console.login, methods=["POST"]),
        Route("/instances/{instance_id}", console.instance, methods=["GET"]),
        Route("/instances/{instance_id}/{action}", console.confirm, methods=["GET"]),
        Route("/instances/{instance_id}/{action}", console.act, methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    handlers = {InvalidInstanceIdError: console.bad_id, InstanceNotFoundError: console.not_found}
    app = Starlette(routes=routes, exception_handlers=handlers)
    return Guard(app, keys, loopback_only=loopback_only)
