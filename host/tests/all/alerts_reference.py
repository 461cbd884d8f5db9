"""The alert events a lake's ticks and bars should raise, computed with no code shared with the
alert guest (guests/alert/src/logic.rs): the rules' semantics as the README states them, in
plain Python, over the documents the pipeline wrote (`stock-stream/`, `stock-bars/`).

Usage: alerts_reference.py LAKE_DIR TOPIC RULES_JSON
Prints one JSON line per event: alert_id, rule, state, instrument_token, value, threshold,
event_time_us, partition, offset.

Per partition, the messages in offset order; a message's ticks in order, each followed by the bars
it closed (in order of end, then instrument). Per partition, instrument and rule: idle -> pending (meets the
threshold) -> firing (held for_ms since pending, cooldown_ms since the last firing) -> resolved
(past `clear` the other way) -> idle. A missing value changes nothing.
"""

import calendar
import json
import math
import os
import struct
import sys
from datetime import datetime


def micros(text):
    """RFC 3339 UTC with microseconds, as the documents write it."""
    t = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")
    return calendar.timegm(t.timetuple()) * 1_000_000 + t.microsecond


def documents(lake, prefix):
    root = os.path.join(lake, prefix)
    for directory, _, files in os.walk(root):
        for name in sorted(files):
            if name.endswith(".ndjson"):
                with open(os.path.join(directory, name)) as f:
                    for line in f:
                        if line.strip():
                            yield json.loads(line)


def fnv64(data):
    h = 0xCBF29CE484222325
    for byte in data:
        h ^= byte
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def alert_id(rule, token, topic, partition, offset, tick, state):
    data = rule.encode() + b"\0" + struct.pack("<Q", token) + topic.encode() + b"\0"
    data += struct.pack("<i", partition) + struct.pack("<q", offset)
    if tick is not None:
        data += struct.pack("<I", tick)
    data += state.encode()
    return "%016x" % fnv64(data)


def meets(rule, v):
    d, t = rule.get("direction", "up"), rule["threshold"]
    return v >= t if d == "up" else v <= t if d == "down" else abs(v) >= t


def clears(rule, v):
    d, c = rule.get("direction", "up"), rule.get("clear", rule["threshold"])
    return v < c if d == "up" else v > c if d == "down" else abs(v) < c


class State:
    def __init__(self):
        self.phase = "idle"
        self.since = None
        self.last_fired = None
        self.window = []


def step(rule, s, v, t):
    """The event a value raises, as (state, level), or None."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if s.phase == "firing":
        if clears(rule, v):
            s.phase = "idle"
            return ("resolved", rule.get("clear", rule["threshold"]))
        return None
    if not meets(rule, v):
        s.phase = "idle"
        return None
    if s.phase == "idle":
        s.since = t
    held = t - s.since >= rule.get("for_ms", 0) * 1000
    cooled = s.last_fired is None or t - s.last_fired >= rule.get("cooldown_ms", 0) * 1000
    if held and cooled:
        s.phase = "firing"
        s.last_fired = t
        return ("firing", rule["threshold"])
    s.phase = "pending"
    return None


def plain_sum(values):
    """Left to right, one rounding per addition (Python 3.12's sum() of floats compensates)."""
    total = 0.0
    for v in values:
        total += v
    return total


def bar_value(rule, s, traded, log_return):
    w = rule["window_bars"]
    if rule["kind"] == "volume_spike":
        v = None
        if s.window:
            m = plain_sum(s.window) / len(s.window)
            v = float(traded) / m if m > 0 else None
        s.window = (s.window + [float(traded)])[-w:]
        return v
    if log_return is not None:
        s.window = (s.window + [log_return])[-w:]
    if len(s.window) < 2:
        return None
    m = plain_sum(s.window) / len(s.window)
    return math.sqrt(plain_sum((x - m) * (x - m) for x in s.window) / (len(s.window) - 1))


def main():
    lake, topic, rules = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    tick_kinds = {"change_pct": "change", "spread_bps": "spread_bps", "price_cross": "last_price"}
    work = []
    for d in documents(lake, "stock-stream"):
        src = d["source"]
        k = src.get("tick")
        work.append(((src["partition"], src["offset"], k or 0, 0, 0, 0), "tick", d))
    for b in documents(lake, "stock-bars"):
        src = b["source"]
        end = micros(b["bar_end"])
        k = src.get("closed_by_tick") or 0
        key = (src["partition"], src["closed_by_offset"], k, 1, end, b["instrument_token"])
        work.append((key, "bar", b))
    work.sort(key=lambda w: w[0])
    states = {}
    for key, what, d in work:
        partition, offset = key[0], key[1]
        token = d["instrument_token"]
        tick = d["source"].get("tick") if what == "tick" else None
        for rule in rules:
            s = states.setdefault((partition, token, rule["name"]), State())
            if what == "tick":
                if rule["kind"] not in tick_kinds:
                    continue
                v = d.get(tick_kinds[rule["kind"]])
                t = micros(d["timestamp"])
            else:
                if rule["kind"] in tick_kinds:
                    continue
                v = bar_value(rule, s, d["traded_quantity"], d["log_return"])
                t = micros(d["bar_end"])
            event = step(rule, s, v, t)
            if event is None:
                continue
            state, level = event
            print(json.dumps({
                "alert_id": alert_id(rule["name"], token, topic, partition, offset, tick, state),
                "rule": rule["name"], "state": state, "instrument_token": token,
                "value": v, "threshold": level, "event_time_us": t,
                "partition": partition, "offset": offset,
            }))


if __name__ == "__main__":
    main()
