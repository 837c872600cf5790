"""ASGI entry point for daphne (``chatsite.asgi:application``): HTTP goes to Django, websockets to chat."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")

# Django must be set up before the consumers (and their models) are imported.
django_asgi_app = get_asgi_application()

from channels.routing import ChannelNameRouter, ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from chat import consumers, routing  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(URLRouter(routing.websocket_urlpatterns)),
        # Background work for `python manage.py runworker chat-archive`.
        "channel": ChannelNameRouter({consumers.ARCHIVE_CHANNEL: consumers.ArchiveWorker.as_asgi()}),
    }
)
