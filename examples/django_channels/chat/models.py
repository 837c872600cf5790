"""Chat messages the archive worker (``manage.py runworker chat-archive``) stores."""

from typing import ClassVar

from django.db import models


class Message(models.Model):
    room = models.CharField(max_length=64, db_index=True)
    text = models.TextField()
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering: ClassVar[list[str]] = ["created", "id"]

    def __str__(self) -> str:
        return f"{self.room}: {self.text[:40]}"
