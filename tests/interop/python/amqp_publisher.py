#!/usr/bin/env python3
"""Publishes to RabbitMQ for the Node tests (``startPublisher`` in ../cluster-harness.mjs):
one JSON command per line on stdin, one JSON answer per line on stdout, on one connection.

- ``{"op": "publish", "queue": Q, "messages": [{"body": <JSON>, "message_id": "...",
  "headers": {...}}, ...]}`` (``message_id`` and ``headers``, e.g. ``x-room``, optional)
  publishes each body, JSON-encoded as ``application/json`` (transient, as
  ``fixtures/producer.py`` does), to the queue ``Q`` through the default exchange, in order,
  on one channel; answers ``{"ok": <count>}`` once the broker has handled them all (a
  synchronous method on the same channel, answered only after every publish before it);
- ``{"op": "delete_queue", "queue": Q}`` deletes it: ``{"ok": 0}``;
- ``{"op": "ping"}``: ``{"ok": 0}`` (connected).

A failed command answers ``{"error": "..."}``. Ends with stdin. Usage:
``amqp_publisher.py [AMQP_URL]`` (default ``$AMQP_URL``, else guest on 127.0.0.1:5672).
"""

import json
import os
import sys

import pika


def main(url):
    conn = pika.BlockingConnection(pika.URLParameters(url))
    chan = conn.channel()
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            try:
                answer = {"ok": run(chan, json.loads(line))}
            except (pika.exceptions.AMQPError, KeyError, ValueError) as error:
                answer = {"error": repr(error)}
                if chan.is_closed:
                    chan = conn.channel()
            sys.stdout.write(json.dumps(answer) + "\n")
            sys.stdout.flush()
    finally:
        if conn.is_open:
            conn.close()


def run(chan, command):
    op = command["op"]
    if op == "ping":
        return 0
    if op == "delete_queue":
        chan.queue_delete(queue=command["queue"])
        return 0
    if op == "publish":
        queue = command["queue"]
        for message in command["messages"]:
            chan.basic_publish(
                exchange="",
                routing_key=queue,
                body=json.dumps(message["body"]),
                properties=pika.BasicProperties(
                    content_type="application/json",
                    content_encoding="utf-8",
                    delivery_mode=1,
                    message_id=message.get("message_id"),
                    headers=message.get("headers"),
                ),
            )
        # The broker handles a channel's methods in order: once this declare is answered,
        # every publish before it has been routed to the queue (which must exist).
        chan.queue_declare(queue=queue, passive=True)
        return len(command["messages"])
    raise ValueError(f"unknown op {op!r}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"))
