"""``cm serve``: a node's store, catalog, share links and page over HTTP.

The modules: app.py (the Starlette app: objects, catalog, share links),
auth.py (the token and the page's session), links.py (signing share links:
pure functions, no web framework), page.py and templates/ (the HTML page),
streaming.py (request bodies into the blocking manager, chunk by chunk),
settings.py (what a running server needs) and run.py (uvicorn).

Only links.py and settings.py may be imported without the ``serve`` extra
(``cm link`` signs links with no server running).
"""
