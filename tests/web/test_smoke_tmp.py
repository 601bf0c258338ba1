from __future__ import annotations
import json
from tests.web.conftest import AppServer

def test_x(app_server: AppServer) -> None:
    r = app_server.client.get("/openapi.json")
    print(json.dumps(r.json(), indent=1)[:20000])
    rec = app_server.connect("u1")
    print(rec)
