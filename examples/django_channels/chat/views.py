"""HTTP views (served by uwsgi): the translated index page, health, version and the archived messages."""

from django.core.cache import cache
from django.db import DatabaseError
from django.http import HttpRequest, JsonResponse
from django.shortcuts import render
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache

from .models import Message
from .release import identity


def index(request: HttpRequest):
    try:
        visits = cache.incr("index-visits")
    except ValueError:
        cache.set("index-visits", 1, timeout=None)
        visits = 1
    context = {"greeting": _("Welcome to the chat"), "visits": visits, **identity()}
    return render(request, "chat/index.html", context)


@never_cache
def health(request: HttpRequest) -> JsonResponse:
    """200 only when the database has the schema (migrations ran) and redis answers."""
    checks = {}
    try:
        Message.objects.exists()
        checks["database"] = "ok"
    except DatabaseError as exc:
        checks["database"] = f"error: {exc}"
    try:
        cache.set("health-probe", "1", timeout=10)
        checks["redis"] = "ok" if cache.get("health-probe") == "1" else "error: value not read back"
    except Exception as exc:  # any redis failure makes the app unhealthy
        checks["redis"] = f"error: {exc}"
    healthy = all(value == "ok" for value in checks.values())
    body = {"status": "ok" if healthy else "error", **checks, **identity()}
    return JsonResponse(body, status=200 if healthy else 503)


@never_cache
def version(request: HttpRequest) -> JsonResponse:
    return JsonResponse(identity())


@never_cache
def messages(request: HttpRequest) -> JsonResponse:
    room = request.GET.get("room", "")
    rows = Message.objects.filter(room=room).order_by("-created", "-id")[:50]
    return JsonResponse({"room": room, "messages": [row.text for row in reversed(rows)]})
