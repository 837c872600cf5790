"""WSGI entry point: ``gunicorn api.wsgi:app`` and ``flask --app api.wsgi``."""

from . import create_app

app = create_app()
