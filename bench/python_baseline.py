#!/usr/bin/env python3
"""The original design's consumer, kept as the baseline `stockpipe bench pipeline --python` runs.

kafka-python consumes `stock-stream`; each message is parsed and sent with one `es.index` call (one
HTTP request per tick), as the original Python pipeline did. Prints one JSON line:
{"messages": N, "seconds": S} (seconds from the first message to the last acknowledged index).

    pip install 'kafka-python==2.2.*' 'elasticsearch==8.15.*'
    python3 bench/python_baseline.py --brokers 127.0.0.1:9092 --es-url http://127.0.0.1:9200 --count 5000
"""
import argparse
import json
import sys
import time
import uuid

from elasticsearch import Elasticsearch
from kafka import KafkaConsumer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--es-url", required=True)
    parser.add_argument("--topic", default="stock-stream")
    parser.add_argument("--index", default="stock-stream")
    parser.add_argument("--count", type=int, required=True, help="stop after this many messages")
    parser.add_argument("--timeout", type=float, default=120.0, help="give up after this many seconds")
    args = parser.parse_args()

    es = Elasticsearch(args.es_url)
    consumer = KafkaConsumer(
        args.topic,
        bootstrap_servers=args.brokers.split(","),
        group_id=f"python-baseline-{uuid.uuid4()}",
        auto_offset_reset="earliest",
        enable_auto_commit=True,
        value_deserializer=lambda v: json.loads(v.decode("utf-8")),
    )
    done = 0
    first = None
    deadline = time.monotonic() + args.timeout
    while done < args.count and time.monotonic() < deadline:
        batches = consumer.poll(timeout_ms=500)
        for records in batches.values():
            for record in records:
                if first is None:
                    first = time.monotonic()
                tick = record.value
                es.index(index=args.index, id=f"{record.partition}-{record.offset}", document=tick)
                done += 1
                if done >= args.count:
                    break
            if done >= args.count:
                break
    seconds = time.monotonic() - first if first is not None else float("nan")
    consumer.close()
    print(json.dumps({"messages": done, "seconds": seconds}))
    return 0 if done >= args.count else 1


if __name__ == "__main__":
    sys.exit(main())
