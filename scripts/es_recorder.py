#!/usr/bin/env python3
"""A stand-in Elasticsearch that answers every request as a healthy ES 8 would and records each
`_bulk` body, for comparing what two builds of the host send (scripts/baseline.sh).

usage: es_recorder.py PORT_FILE BODIES_FILE
Listens on a free port of 127.0.0.1 (written to PORT_FILE); appends every bulk body to BODIES_FILE.
"""
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port_file, bodies_file = sys.argv[1], sys.argv[2]
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("x-elastic-product", "Elasticsearch")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def body(self):
        n = int(self.headers.get("content-length") or 0)
        return self.rfile.read(n) if n else b""

    def do_GET(self):
        self.body()
        if self.path.split("?")[0] == "/":
            self.answer(200, {"name": "recorder", "cluster_name": "recorder",
                              "version": {"number": "8.15.3"}, "tagline": "You Know, for Search"})
        else:
            self.answer(200, {})

    do_HEAD = do_GET

    def do_PUT(self):
        self.body()
        self.answer(200, {"acknowledged": True})

    def do_POST(self):
        body = self.body()
        if self.path.split("?")[0].endswith("/_bulk"):
            with lock, open(bodies_file, "ab") as f:
                f.write(body)
            lines = [l for l in body.split(b"\n") if l.strip()]
            items = []
            for action in lines[0::2]:
                (kind, meta), = json.loads(action).items()
                items.append({kind: {"_index": meta.get("_index"), "_id": meta.get("_id"),
                                     "status": 201, "result": "created"}})
            self.answer(200, {"took": 1, "errors": False, "items": items})
        else:
            self.answer(200, {"acknowledged": True})


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(port_file, "w") as f:
    f.write(str(server.server_address[1]))
server.serve_forever()
