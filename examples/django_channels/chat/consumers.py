"""Websocket consumers (daphne) and the archive worker (``manage.py runworker chat-archive``).

/ws/echo/ greets with the serving release's identity and echoes every text frame; /ws/chat/<room>/ broadcasts
each message to the room through the redis channel layer (so clients on different daphne instances meet) and
hands it to the archive worker, which stores it in the database.
"""

import json
import re

from channels.consumer import SyncConsumer
from channels.generic.websocket import AsyncWebsocketConsumer

from .models import Message
from .release import identity

ARCHIVE_CHANNEL = "chat-archive"
ROOM_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class EchoConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        await self.accept()
        await self.send(text_data=json.dumps({"type": "hello", **identity()}))

    async def receive(self, text_data=None, bytes_data=None) -> None:
        await self.send(text_data=json.dumps({"type": "echo", "echo": text_data, **identity()}))


class ChatConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        self.room = self.scope["url_route"]["kwargs"]["room"]
        if not ROOM_PATTERN.match(self.room):
            await self.close(code=4400)
            return
        self.group = f"chat-{self.room}"
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self.send(text_data=json.dumps({"type": "hello", "room": self.room, **identity()}))

    async def disconnect(self, code) -> None:
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None) -> None:
        text = (text_data or "")[:2000]
        await self.channel_layer.group_send(
            self.group, {"type": "chat.message", "text": text, "sender": identity()["pid"]}
        )
        await self.channel_layer.send(ARCHIVE_CHANNEL, {"type": "archive.message", "room": self.room, "text": text})

    async def chat_message(self, event) -> None:
        await self.send(
            text_data=json.dumps({"type": "message", "room": self.room, "text": event["text"], **identity()})
        )


class ArchiveWorker(SyncConsumer):
    def archive_message(self, event) -> None:
        Message.objects.create(room=event["room"][:64], text=event["text"])
