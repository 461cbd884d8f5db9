#!/usr/bin/python3
"""Runs the project's compose stack (with CI's stand-ins) and checks what users rely on.

Started by scripts/containers.sh, which builds the images and serves podman's Docker API; run with
Debian's python3 (docker-compose's own, which has PyYAML). Every check fails the run with what it
saw. In order:

1. `up`: every service turns healthy, each only after the services it depends on did
   (`condition: service_healthy`), and the Kibana import one-shot exits 0 having imported every
   saved object.
2. Kibana's health check follows the overall status: it fails while Kibana is degraded even though
   its plugins report "available".
3. Ticks produced from outside the host's container (a container of its own on the stack's
   network) are consumed, indexed (count checked) and written to the lake in the GCS stand-in
   (every line read back); `/ready` and `/metrics` answer on the published port.
4. A new validate component copied into the guests volume is hot-swapped: the host reports the
   new version, and every tick processed after the swap carries it.
5. `stop` and `start` of the host's container, with ticks produced while it is down: afterwards the
   lake holds every tick exactly once and the index counts them all.
6. Prints the image's size and the host's start-to-ready time.
"""

import argparse
import datetime
import hashlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import yaml

PROJECT = os.environ.get("COMPOSE_PROJECT_NAME", "stockpipe-ci")
HOST_IMAGE = "localhost/stockpipe:ci"
API = "http://127.0.0.1:8080"
ES = "http://127.0.0.1:9200"
GCS = "http://127.0.0.1:4443"
KIBANA = "http://127.0.0.1:5601"
BUCKET, LAKE_PREFIX = "stockpipe-lake", "stockpipe/stock-stream/"
ADMIN_TOKEN = os.environ.get("STOCKPIPE_ADMIN_TOKEN", "ci-admin-token")


class CheckFailed(Exception):
    pass


def run(args, check=True, **kwargs):
    result = subprocess.run(args, capture_output=True, text=True, **kwargs)
    if check and result.returncode != 0:
        raise CheckFailed(f"{shlex.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}")
    return result


def http(method, url, body=None, headers=None, timeout=10):
    """(status, body bytes); status 0 when nothing answered."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, b""


def wait_for(what, condition, timeout, every=0.5):
    """Polls `condition` until it returns something truthy; fails naming `what` and the last value."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = condition()
        if last and last[0]:
            return last
        time.sleep(every)
    raise CheckFailed(f"{what}: not within {timeout} s (last seen: {last})")


class Stack:
    def __init__(self, compose):
        self.compose = shlex.split(compose)
        self.config = yaml.safe_load(run(self.compose + ["config"]).stdout)

    def __call__(self, *args, check=True):
        return run(self.compose + list(args), check=check)

    def container(self, service):
        ids = self("ps", "-a", "-q", service).stdout.split()
        if len(ids) != 1:
            raise CheckFailed(f"expected one container of {service}, found {ids}")
        return ids[0]

    def depends_on(self):
        """(service, dependency) for every `condition: service_healthy`."""
        edges = []
        for name, service in self.config["services"].items():
            for dep, how in (service.get("depends_on") or {}).items():
                if how.get("condition") == "service_healthy":
                    edges.append((name, dep))
        return edges


def inspect(container, template):
    return run(["podman", "inspect", "--format", template, container]).stdout.strip()


def first_pass(container):
    """When the container's earliest passing health check in podman's own log began (epoch
    seconds): podman records every run, whoever asked for it."""
    log = json.loads(inspect(container, "{{json .State.Health.Log}}") or "null") or []
    starts = []
    for entry in log:
        if entry.get("ExitCode") == 0 and entry.get("Start"):
            stamp = entry["Start"]
            # RFC 3339 with nanoseconds: keep microseconds for Python's parser.
            head, _, rest = stamp.partition(".")
            digits = "".join(c for c in rest if c.isdigit())
            zone = rest[len(digits):].replace("Z", "+00:00")
            parsed = f"{head}.{digits[:6].ljust(6, '0')}{zone}" if rest else stamp.replace("Z", "+00:00")
            starts.append(datetime.datetime.fromisoformat(parsed).timestamp())
    return min(starts) if starts else None


class HealthLoop(threading.Thread):
    """podman has no systemd here to run health checks: this loop runs them (every container of
    the project, about once a second) and notes when each first passed — the start of the
    earliest passing check in podman's own log (or of ours), so that a dependent started after
    the dependency turned healthy is always seen as later."""

    def __init__(self):
        super().__init__(daemon=True)
        self.first_healthy = {}
        self.paused = set()
        self.lock = threading.Lock()
        self.stopped = threading.Event()

    def run(self):
        while not self.stopped.is_set():
            listing = run(["podman", "ps", "--filter", f"label=com.docker.compose.project={PROJECT}",
                           "--format", "{{.ID}}"], check=False).stdout.split()
            for cid in listing:
                with self.lock:
                    if cid in self.paused:
                        continue
                began = time.time()
                if run(["podman", "healthcheck", "run", cid], check=False).returncode == 0:
                    with self.lock:
                        seen = cid in self.first_healthy
                    if not seen:
                        at = first_pass(cid) or began
                        with self.lock:
                            self.first_healthy[cid] = min(at, began)
            time.sleep(1)

    def healthy_at(self, cid):
        with self.lock:
            for key, at in self.first_healthy.items():
                if cid.startswith(key) or key.startswith(cid):
                    return at
        return None

    def forget(self, cid):
        with self.lock:
            for key in [k for k in self.first_healthy if cid.startswith(k) or k.startswith(cid)]:
                del self.first_healthy[key]


def es_count():
    status, body = http("GET", f"{ES}/stock-stream/_count")
    return json.loads(body)["count"] if status == 200 else 0


def lake_documents():
    """Every line of every object under the lake's prefix in the GCS stand-in."""
    docs, token = [], None
    while True:
        query = {"prefix": LAKE_PREFIX}
        if token:
            query["pageToken"] = token
        status, body = http("GET", f"{GCS}/storage/v1/b/{BUCKET}/o?{urllib.parse.urlencode(query)}")
        if status != 200:
            raise CheckFailed(f"listing the lake: {status} {body[:200]!r}")
        listing = json.loads(body)
        for item in listing.get("items", []):
            name = urllib.parse.quote(item["name"], safe="")
            status, data = http("GET", f"{GCS}/storage/v1/b/{BUCKET}/o/{name}?alt=media")
            if status != 200:
                raise CheckFailed(f"reading {item['name']}: {status}")
            docs.extend(json.loads(line) for line in data.decode().splitlines() if line.strip())
        token = listing.get("nextPageToken")
        if not token:
            return docs


def metric(name):
    status, body = http("GET", f"{API}/metrics")
    if status != 200:
        return None
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def component_version(data):
    """The host's name for a component: sha256 of its bytes, first 8 bytes in hex."""
    return "sha256:" + hashlib.sha256(data).hexdigest()[:16]


def with_custom_section(component, name, payload):
    """The same component with one more custom section: a new version that behaves the same."""

    def leb128(n):
        out = bytearray()
        while True:
            byte, n = n & 0x7F, n >> 7
            out.append(byte | (0x80 if n else 0))
            if not n:
                return bytes(out)

    content = leb128(len(name)) + name + payload
    return component + b"\x00" + leb128(len(content)) + content


def produce(ticks_dir, file_name):
    """Produces a file of ticks from a container of its own on the stack's network."""
    out = run(["podman", "run", "--rm", "--network", f"{PROJECT}_default",
               "-v", f"{ticks_dir}:/ticks:ro", HOST_IMAGE,
               "produce", "--input", f"/ticks/{file_name}", "--brokers", "kafka:9092"]).stdout
    produced = json.loads(out.strip().splitlines()[-1])["produced"]
    return produced


def step(title):
    print(f"-- {title}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compose", required=True, help="the docker-compose command, files included")
    parser.add_argument("--binary", required=True, help="the host's binary (simulates the ticks)")
    parser.add_argument("--guests", required=True, help="directory with the shipped guests")
    parser.add_argument("--base-image", required=True, help="the runtime stage's base (its size is printed)")
    parser.add_argument("--ticks", type=int, default=3000, help="ticks produced in all")
    args = parser.parse_args()
    os.environ["STOCKPIPE_ADMIN_TOKEN"] = ADMIN_TOKEN
    stack = Stack(args.compose)
    figures = {}

    # The ticks, in three parts: before the swap, after it, while the host is stopped.
    ticks_dir = tempfile.mkdtemp(prefix="stockpipe-ci-ticks-")
    os.chmod(ticks_dir, 0o755)
    all_ticks = os.path.join(ticks_dir, "all.ndjson")
    run([args.binary, "simulate", "--instruments", "40", "--ticks", str(args.ticks),
         "--seed", "19", "--out", all_ticks])
    lines = open(all_ticks).read().splitlines()
    thirds = [lines[: len(lines) // 2], lines[len(lines) // 2: 5 * len(lines) // 6], lines[5 * len(lines) // 6:]]
    for i, part in enumerate(thirds):
        path = os.path.join(ticks_dir, f"part{i}.ndjson")
        with open(path, "w") as f:
            f.write("\n".join(part) + "\n")
        os.chmod(path, 0o644)

    step("up: services healthy in dependency order")
    health = HealthLoop()
    health.start()
    began = time.time()
    stack("up", "-d", "--no-build")
    services = [s for s in stack.config["services"] if s != "kibana-import"]
    ids = {s: stack.container(s) for s in services}
    wait_for("every service healthy",
             lambda: (all(health.healthy_at(ids[s]) for s in services),
                      {s: bool(health.healthy_at(ids[s])) for s in services}), 180)
    started = {s: int(inspect(ids[s], "{{.State.StartedAt.UnixMilli}}")) / 1000 for s in services}
    for service, dependency in stack.depends_on():
        if service not in ids:
            continue
        healthy = health.healthy_at(ids[dependency])
        if started[service] < healthy:
            raise CheckFailed(f"{service} started at {started[service]:.3f}, before {dependency} "
                              f"turned healthy at {healthy:.3f}")
        print(f"   {service} started {started[service] - healthy:5.1f} s after {dependency} turned healthy")
    figures["stack_up_seconds"] = round(max(health.healthy_at(ids[s]) for s in services) - began, 1)

    importer = stack.container("kibana-import")
    wait_for("kibana-import exits",
             lambda: (inspect(importer, "{{.State.Status}}") == "exited", inspect(importer, "{{.State.Status}}")), 120)
    code = inspect(importer, "{{.State.ExitCode}}")
    if code != "0":
        raise CheckFailed(f"kibana-import exited {code}: {run(['podman', 'logs', importer]).stderr[-2000:]}")
    status, body = http("GET", f"{KIBANA}/_standin/imports")
    imported = json.loads(body)
    expected = sum(1 for line in open("data/kibana/stockpipe.ndjson") if line.strip())
    if len(imported) != expected:
        raise CheckFailed(f"Kibana got {len(imported)} saved objects, the project has {expected}")
    print(f"   kibana-import: {len(imported)} saved objects imported")

    step("Kibana's health check follows the overall status")
    kibana = ids["kibana"]
    with health.lock:
        health.paused.add(kibana)
    try:
        for level, healthy in (("degraded", False), ("available", True)):
            http("PUT", f"{KIBANA}/_standin/level/{level}")
            passed = run(["podman", "healthcheck", "run", kibana], check=False).returncode == 0
            if passed != healthy:
                raise CheckFailed(f"Kibana's health check {'passed' if passed else 'failed'} while "
                                  f"the overall status was {level} (plugins available)")
            print(f"   overall {level}: health check {'passes' if passed else 'fails'}")
    finally:
        with health.lock:
            health.paused.discard(kibana)

    step("ticks produced from outside are indexed and reach the lake")
    first = produce(ticks_dir, "part0.ndjson")
    wait_for(f"{first} ticks consumed", lambda: ((metric("stockpipe_ticks_consumed_total") or 0) >= first,
                                                 metric("stockpipe_ticks_consumed_total")), 120)
    accepted = metric("stockpipe_ticks_accepted_total")
    if accepted != first:
        raise CheckFailed(f"{first} produced, {accepted} accepted: the simulated ticks are all valid")
    wait_for(f"{first} documents indexed", lambda: (es_count() == first, es_count()), 60)
    wait_for(f"{first} lines in the lake", lambda: (len(lake_documents()) == first, len(lake_documents())), 60)
    status, body = http("GET", f"{API}/ready")
    if status != 200 or not json.loads(body)["ready"]:
        raise CheckFailed(f"/ready answered {status}: {body[:300]!r}")
    print(f"   {first} ticks: indexed, in the lake; /ready and /metrics answer on the published port")

    step("a guest copied into the guests volume is hot-swapped")
    host = ids["stockpipe"]
    old_validate = open(os.path.join(args.guests, "validate.wasm"), "rb").read()
    new_validate = with_custom_section(old_validate, b"stockpipe-ci", b"a new version, same logic")
    old_version, new_version = component_version(old_validate), component_version(new_validate)
    candidate = os.path.join(ticks_dir, "validate.wasm")
    with open(candidate, "wb") as f:
        f.write(new_validate)
    run(["podman", "cp", candidate, f"{host}:/opt/stockpipe/guests/validate.wasm"])

    def swapped():
        status, body = http("GET", f"{API}/guests")
        if status != 200:
            return (False, status)
        view = json.loads(body)
        loaded = {g["stage"]: g["version"] for g in view["guests"]}
        refused = [e for e in view["history"] if e["outcome"] == "refused"]
        if refused:
            raise CheckFailed(f"the swap was refused: {refused}")
        return (loaded["validate"] == new_version, loaded)

    wait_for("the new validate version loaded", swapped, 60)
    second = produce(ticks_dir, "part1.ndjson")
    wait_for("the ticks after the swap indexed",
             lambda: (es_count() == first + second, es_count()), 60)
    print(f"   validate {old_version} -> {new_version}; {second} more ticks through it")

    step("stop and start of the host's container lose and double nothing")
    stack("stop", "-t", "30", "stockpipe")
    code = inspect(host, "{{.State.ExitCode}}")
    if code != "0":
        raise CheckFailed(f"the host exited {code} on stop (SIGTERM): {run(['podman', 'logs', host]).stderr[-2000:]}")
    third = produce(ticks_dir, "part2.ndjson")
    health.forget(host)
    stack("start", "stockpipe")
    restarted = int(inspect(host, "{{.State.StartedAt.UnixMilli}}")) / 1000

    def ready():
        status, body = http("GET", f"{API}/ready", timeout=2)
        return (status == 200 and json.loads(body).get("ready"), status)

    wait_for("/ready after the restart", ready, 60, every=0.05)
    figures["start_to_ready_seconds"] = round(time.time() - restarted, 2)
    total = first + second + third
    wait_for(f"all {total} ticks indexed", lambda: (es_count() == total, es_count()), 120)
    wait_for(f"all {total} lines in the lake", lambda: (len(lake_documents()) >= total, len(lake_documents())), 60)
    docs = lake_documents()
    ids_seen = [d["event_id"] for d in docs]
    if len(docs) != total or len(set(ids_seen)) != total:
        raise CheckFailed(f"the lake holds {len(docs)} lines, {len(set(ids_seen))} distinct, of {total} ticks")
    versions = [d["guest_versions"]["validate"] for d in docs]
    counted = {v: versions.count(v) for v in set(versions)}
    if counted != {old_version: first, new_version: second + third}:
        raise CheckFailed(f"validate versions in the lake: {counted}; expected {first} of {old_version} "
                          f"and {second + third} of {new_version}")
    print(f"   {total} ticks: each once in the lake, all indexed, {third} of them produced while stopped")

    figures["image_size_mb"] = round(int(inspect(HOST_IMAGE, "{{.Size}}")) / 1e6, 1)
    figures["base_image_size_mb"] = round(int(inspect(args.base_image, "{{.Size}}")) / 1e6, 1)
    figures["ticks"] = total
    health.stopped.set()
    print(json.dumps(figures))


if __name__ == "__main__":
    try:
        main()
    except CheckFailed as e:
        print(f"compose check FAILED: {e}", file=sys.stderr)
        sys.exit(1)
