"""`charrnn serve`: an HTTP API and a playground page over the sampling engine.

    app.py          the FastAPI app: routes, request schema, EventStream (one answer's buffer)
    server.py       uvicorn, bound to a socket the command chose
    guard.py        the Host/Origin check against DNS rebinding and the body limit
    playground.html the page at /
"""
