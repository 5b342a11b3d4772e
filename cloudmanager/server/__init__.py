"""``cm serve``: a node's store, catalog, share links and page over HTTP.

The modules: app.py (the Starlette app: objects, catalog, share links),
auth.py (the token and the page's session), page.py and templates/ (the HTML
page), parsing.py (numbers from requests), streaming.py (request bodies into the
blocking manager, chunk by chunk), settings.py (what a running server needs)
and run.py (uvicorn).  Signing share links is cloudmanager/links.py's (pure
functions: the core, ``cm link`` and the server share it).

Only settings.py may be imported without the ``serve`` extra.
"""
