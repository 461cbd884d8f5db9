#!/usr/bin/env python3
"""CI's stand-in for Kibana: the two things the compose stack asks of it.

- `GET /api/status` in Kibana 8's shape: `status.overall.level` plus core and plugin entries that
  stay "available" whatever the overall level is (as a real Kibana's do while it is degraded), and
  503 while the overall level is `unavailable` or `critical`. It starts unavailable for
  STARTUP_SECONDS, then turns available.
- `POST /api/saved_objects/_import` (multipart, `kbn-xsrf` required): counts the NDJSON objects of
  the `file` field, refuses lines that are not saved objects, and answers as Kibana does.

For the test itself: `PUT /_standin/level/<level>` sets the overall level, `GET /_standin/imports`
lists what was imported (type and id of every object).
"""

import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STARTED = time.monotonic()
STARTUP_SECONDS = float(os.environ.get("STARTUP_SECONDS", "2"))
LOCK = threading.Lock()
STATE = {"level": None, "imports": []}


def overall_level():
    with LOCK:
        if STATE["level"] is not None:
            return STATE["level"]
    return "unavailable" if time.monotonic() - STARTED < STARTUP_SECONDS else "available"


def status_body(level):
    entry = {"level": "available", "summary": "available"}
    return {
        "name": "kibana-standin",
        "version": {"number": "8.15.3"},
        "status": {
            "overall": {"level": level, "summary": f"overall {level} (stand-in)"},
            "core": {"elasticsearch": entry, "savedObjects": entry},
            "plugins": {"dashboard": entry, "visualizations": entry, "dataViews": entry},
        },
    }


def saved_objects(body, content_type):
    """The objects of the multipart field `file`, one JSON object per NDJSON line."""
    marker = "boundary="
    if marker not in content_type:
        raise ValueError("not multipart/form-data")
    boundary = content_type.split(marker, 1)[1].strip().strip('"').encode()
    for part in body.split(b"--" + boundary):
        head, _, content = part.partition(b"\r\n\r\n")
        if b'name="file"' not in head:
            continue
        objects = []
        for line in content.rstrip(b"\r\n").splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            if not isinstance(item, dict) or "type" not in item or "id" not in item:
                raise ValueError(f"not a saved object: {line[:80]!r}")
            objects.append(item)
        return objects
    raise ValueError("no form field named file")


class Handler(BaseHTTPRequestHandler):
    def answer(self, code, value):
        data = json.dumps(value, separators=(",", ":")).encode()  # compact, as Node writes it
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path.startswith("/api/status"):
            level = overall_level()
            code = 503 if level in ("unavailable", "critical") else 200
            return self.answer(code, status_body(level))
        if self.path == "/_standin/imports":
            with LOCK:
                return self.answer(200, STATE["imports"])
        self.answer(404, {"error": f"no route {self.path}"})

    def do_PUT(self):
        prefix = "/_standin/level/"
        if self.path.startswith(prefix):
            with LOCK:
                STATE["level"] = self.path[len(prefix):]
            return self.answer(200, {"level": STATE["level"]})
        self.answer(404, {"error": f"no route {self.path}"})

    def do_POST(self):
        if not self.path.startswith("/api/saved_objects/_import"):
            return self.answer(404, {"error": f"no route {self.path}"})
        if overall_level() in ("unavailable", "critical"):
            return self.answer(503, {"error": "Kibana server is not ready yet"})
        if self.headers.get("kbn-xsrf") is None:
            return self.answer(400, {"error": "Request must contain a kbn-xsrf header."})
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        try:
            objects = saved_objects(body, self.headers.get("content-type", ""))
        except ValueError as e:
            return self.answer(400, {"statusCode": 400, "error": "Bad Request", "message": str(e)})
        with LOCK:
            STATE["imports"].extend({"type": o["type"], "id": o["id"]} for o in objects)
        results = [{"type": o["type"], "id": o["id"]} for o in objects]
        self.answer(200, {"success": True, "successCount": len(objects),
                          "successResults": results, "errors": []})

    def log_message(self, fmt, *args):
        sys.stderr.write("kibana-standin: " + (fmt % args) + "\n")


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "5601"))
    ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()
