"""Who may see /ui/: sign-in and sign-out, the session on every request, CSRF on every POST,
and the security headers on every answer (errors included)."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from urllib.parse import urlencode

from aiohttp import web

from app.errors import NotestoreError, Unavailable
from app.keys import SETTINGS
from app.middleware import RETRY_AFTER_S
from app.queries.merchants import Ambiguous
from app.ui.render import page
from app.ui.session import (
    COOKIE,
    LOGIN_COOKIE,
    PATH,
    Session,
    Signer,
    new_session,
    safe_next,
    scope_of,
    token_named,
)

SIGNER: web.AppKey[Signer] = web.AppKey("ui_signer", Signer)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self';"
        " object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
OPEN = (f"{PATH}/login", f"{PATH}/static/", f"{PATH}/favicon.svg")


def _is_open(path: str) -> bool:
    return path in (OPEN[0], OPEN[2]) or path.startswith(OPEN[1])


def to_login(request: web.Request) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(f"{PATH}/login?{urlencode({'next': request.path_qs})}")


def see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def _session(request: web.Request) -> Session | None:
    return request.app[SIGNER].session(request.cookies.get(COOKIE))


async def _answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not _is_open(request.path):
        session = _session(request)
        scope = scope_of(request.config_dict[SETTINGS], session) if session else None
        if session is None or scope is None:
            if request.method == "POST":
                raise web.HTTPForbidden(text="your session has ended: sign in again")
            raise to_login(request)
        request["scope"] = scope
        request["csrf"] = request.app[SIGNER].csrf(session.nonce)
        if request.method == "POST":
            form = await request.post()
            if not request.app[SIGNER].csrf_ok(session.nonce, form.get("csrf")):
                raise web.HTTPForbidden(text="this form's CSRF token is missing or wrong")
    return await handler(request)


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await _answer(request, handler)
    except Ambiguous as exc:
        response = await page(request, "ambiguous.html", {"message": str(exc),
                              "merchants": exc.merchants}, status=409)  # fmt: skip
    except NotestoreError as exc:
        response = await page(request, "error.html", {"message": str(exc)}, status=exc.status)
        if isinstance(exc, Unavailable) and exc.retry_after is not None:
            response.headers["Retry-After"] = str(exc.retry_after)
    except web.HTTPException as exc:
        if exc.status < 400:
            exc.headers.update(HEADERS)
            raise
        response = await page(request, "error.html", {"message": exc.text or exc.reason},
                              status=exc.status)  # fmt: skip
        if "Retry-After" in exc.headers:
            response.headers["Retry-After"] = exc.headers["Retry-After"]
    if response.status == 503:  # as the API: every 503 says when to come back
        response.headers.setdefault("Retry-After", str(RETRY_AFTER_S))
    response.headers.update(HEADERS)
    if not request.path.startswith(OPEN[1]) and request.path != OPEN[2]:
        response.headers["Cache-Control"] = "no-store"
    return response


def over_https(request: web.Request) -> bool:
    """Whether the browser reached us over HTTPS: this connection's TLS, or, with
    `trust_forwarded_proto`, the proxy's `X-Forwarded-Proto` (its last value: the one the
    nearest proxy set; a value the client sent before it cannot win)."""
    if request.secure:
        return True
    if not request.config_dict[SETTINGS].trust_forwarded_proto:
        return False
    values = ",".join(request.headers.getall("X-Forwarded-Proto", ())).split(",")
    return values[-1].strip().lower() == "https"


def set_cookie(request: web.Request, response: web.StreamResponse, name: str, value: str,
                max_age: int) -> None:  # fmt: skip
    response.set_cookie(
        name, value, max_age=max_age, path=PATH, httponly=True, samesite="Strict",
        secure=over_https(request),
    )  # fmt: skip


async def login_form(request: web.Request, problem: str = "", status: int = 200) -> web.Response:
    """The sign-in form; its CSRF token is bound to a nonce in a short-lived cookie."""
    nonce = secrets.token_urlsafe(16)
    form_next = request.query.get("next") if request.method == "GET" else None
    if request.method == "POST":
        form_next = str((await request.post()).get("next", ""))
    context = {
        "login_csrf": request.app[SIGNER].csrf(nonce),
        "next": safe_next(form_next),
        "problem": problem,
    }
    response = await page(request, "login.html", context, status=status)
    set_cookie(request, response, LOGIN_COOKIE, nonce, 1800)
    return response


async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    signer, settings = request.app[SIGNER], request.config_dict[SETTINGS]
    if not signer.csrf_ok(request.cookies.get(LOGIN_COOKIE), form.get("csrf")):
        raise web.HTTPForbidden(text="the sign-in form's CSRF token is missing or wrong: reload it")
    token = str(form.get("token", "")).strip()
    if not token or not token_named(settings, token):
        return await login_form(request, "That token is not configured.", status=401)
    session = new_session(token, settings.session_hours)
    response = see_other(safe_next(form.get("next")))
    set_cookie(
        request, response, COOKIE, signer.cookie(session), int(settings.session_hours * 3600)
    )
    response.del_cookie(LOGIN_COOKIE, path=PATH)
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    response = see_other(f"{PATH}/login")
    response.del_cookie(COOKIE, path=PATH)
    return response
