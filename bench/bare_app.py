"""The baseline of the HTTP benchmark: a bare Flask route answering a fixed 2 KB JSON body,
served with the same gunicorn settings as the gateway."""

from __future__ import annotations

import orjson
from flask import Flask, Response

BODY = orjson.dumps({"resourceType": "Basic", "id": "baseline", "text": "x" * 1960})
app = Flask(__name__)


@app.get("/fixed")
def fixed() -> Response:
    """Return the fixed body."""
    return Response(BODY, content_type="application/json")
