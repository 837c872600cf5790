"""HTTP routes (served by uwsgi); websocket routes are in chat/routing.py (served by daphne)."""

from chat import views
from django.urls import path

urlpatterns = [
    path("", views.index, name="index"),
    path("health/", views.health, name="health"),
    path("version/", views.version, name="version"),
    path("messages/", views.messages, name="messages"),
]
