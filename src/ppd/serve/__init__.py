"""``ppd serve``: a local browser app to click prompts on an image and watch the defender.

``create_app()`` builds the FastAPI app (routes in :mod:`ppd.serve.app`, sessions and the
frame LRU in :mod:`ppd.serve.sessions`, the page in ``static/``: plain HTML, CSS and JS,
no build step). Install with ``pip install 'ppd[serve]'``.
"""

from __future__ import annotations


def create_app(*args, **kwargs):
    from ppd.serve.app import create_app as make

    return make(*args, **kwargs)
