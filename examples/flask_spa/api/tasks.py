"""Celery tasks of the example app. Broker and result backend come from the environment (the shared .env)."""

from __future__ import annotations

import os

from celery import Celery

celery = Celery(
    "api",
    broker=os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0"),
    backend=os.environ.get("CELERY_RESULT_BACKEND", "redis://127.0.0.1:6379/1"),
)
celery.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_expires=3600,
    broker_connection_retry_on_startup=True,
)


@celery.task(name="api.tasks.add")
def add(x: float, y: float) -> float:
    return x + y
