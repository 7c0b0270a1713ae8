"""Scopes the router's "pinned to primary" flag to one request."""

from __future__ import annotations

from .router import pinned_to_primary_scope


class PinPrimaryMiddleware:
    """Every request starts unpinned; a write pins the rest of it to the primary.

    Without this, a WSGI server that reuses threads (gunicorn, uWSGI) would
    carry one request's pin into the next request served by the same thread,
    and those reads would all go to the primary.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        with pinned_to_primary_scope():
            return self.get_response(request)
