"""The RabbitMQ bridge of the ``halley`` binary, end to end: pika on one side, python-socketio on
the other, a real RabbitMQ in between.

Needs a broker (``AMQP_URL``, default ``amqp://guest:guest@127.0.0.1:5672/%2f``) and the release
binary (``HALLEY_BIN``, default ``../../../target/release/halley`` relative to this file; build it
with ``cargo build --release``). From this folder::

    /path/to/venv/bin/python -m unittest -v test_amqp.py

Every test starts its own ``halley`` on a free port with the flags it needs, waits on
``/healthz`` until the bridge is connected, and stops it with SIGTERM. ``HALLEY_SERVER_LOG=1``
prints each server's output when it stops. ``BrokerRestartTests`` restarts RabbitMQ
(``rabbitmqctl stop_app`` / ``start_app``); set ``HALLEY_SKIP_BROKER_RESTART=1`` to skip it on a
shared broker.

Queues of their own (``halley-test-*``) keep the tests apart from each other; only the seed
scenario uses the seed's queue ``socket.io``, purged first. Waits are bounded and wait on
something observable; nothing sleeps to wait.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from unittest import mock

import engineio
import pika
import socketio

TIMEOUT = 10.0
# How long RabbitMQ and the bridge's backoff may take to come back after a restart.
RESTART_TIMEOUT = 60.0
HEALTH_POLL = 0.05
HERE = Path(__file__).resolve().parent
ROOT = HERE / ".." / ".." / ".."
HALLEY_BIN = Path(
    os.environ.get("HALLEY_BIN", ROOT / "target" / "release" / "halley")
).resolve()
PRODUCER = (ROOT / "fixtures" / "producer.py").resolve()
AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
SEED_QUEUE = "socket.io"
# /healthz is asked directly, whatever http_proxy says.
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
EXCHANGE = "halley.events"


def setUpModule():
    if not HALLEY_BIN.is_file():
        raise RuntimeError(f"{HALLEY_BIN} missing: cargo build --release (or set HALLEY_BIN)")
    try:
        conn, _ = broker()
    except pika.exceptions.AMQPError as error:
        raise RuntimeError(
            f"no RabbitMQ at {AMQP_URL} ({error!r}): rabbitmq-server -detached (or set AMQP_URL)"
        ) from None
    conn.close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def broker():
    """A new blocking connection and a channel with publisher confirms."""
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    chan = conn.channel()
    chan.confirm_delivery()
    return conn, chan


def unique(prefix="halley-test"):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class Halley:
    """The ``halley`` binary on a free port, its output drained by a thread."""

    def __init__(self, *args):
        for _ in range(5):
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            # /healthz with details, /metrics and /publish are on the admin listener.
            self.admin_port = free_port()
            self.admin = f"http://127.0.0.1:{self.admin_port}"
            self.output = []
            self.exited = threading.Event()
            self.process = subprocess.Popen(
                [
                    str(HALLEY_BIN),
                    "--listen",
                    f"127.0.0.1:{self.port}",
                    "--admin-listen",
                    f"127.0.0.1:{self.admin_port}",
                    *args,
                ],
                env=dict(os.environ, HALLEY_LOG=os.environ.get("HALLEY_LOG", "info")),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            self.drain = threading.Thread(target=self._drain, daemon=True)
            self.drain.start()
            try:
                self.wait_health(lambda h: True, what="/healthz answers")
                return
            except AssertionError:
                exited = self.process.poll() is not None
                self.stop()
                if exited and "cannot listen" in self.logs():
                    continue  # lost the race for the port to another process: another port
                raise
        raise RuntimeError("no free port for halley")

    def _drain(self):
        for line in self.process.stdout:
            self.output.append(line)
        self.exited.set()

    def logs(self):
        return "".join(self.output)

    def health(self):
        with DIRECT.open(self.admin + "/healthz", timeout=2) as res:
            return json.load(res)

    def wait_health(self, predicate, timeout=TIMEOUT, what="healthz condition"):
        """Polls ``/healthz`` (every HEALTH_POLL s at most) until ``predicate(health)``."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            try:
                last = self.health()
                if predicate(last):
                    return last
            except OSError as error:
                last = error
            if self.process.poll() is not None:
                raise AssertionError(
                    f"halley exited ({self.process.returncode}) waiting for {what}; "
                    f"output:\n{self.logs()}"
                )
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"no {what} within {timeout} s; last /healthz: {last!r}; "
                    f"output:\n{self.logs()}"
                )
            # Wakes early if the process dies.
            self.exited.wait(HEALTH_POLL)

    def wait_connected(self, connects=1, timeout=TIMEOUT):
        return self.wait_health(
            lambda h: h["amqp"]["connected"] and h["amqp"]["connects"] >= connects,
            timeout,
            f"amqp connected (connects >= {connects})",
        )

    def stop(self):
        """SIGTERM, then the exit code (killed and None after TIMEOUT)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            code = None
        self.drain.join(timeout=TIMEOUT)
        self.process.stdout.close()
        if os.environ.get("HALLEY_SERVER_LOG") == "1":
            sys.stderr.write(f"--- halley {self.port} (exit {code}):\n{self.logs()}")
        return code


def http_status(server, path, admin=True):
    """``(status, JSON body)`` of a GET on the admin listener (or the public one), whatever
    the status."""
    try:
        with DIRECT.open((server.admin if admin else server.url) + path, timeout=2) as res:
            return res.status, json.load(res)
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.load(error)


def wait_status(server, path, status, timeout):
    """Polls ``path`` until it answers ``status``; returns that answer's body."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = http_status(server, path)
            if last[0] == status:
                return last[1]
        except OSError as error:
            last = error
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"{path} not {status} within {timeout} s; last: {last!r}; "
                f"output:\n{server.logs()}"
            )
        server.exited.wait(HEALTH_POLL)


class HealthzWatch:
    """Asks ``/healthz`` every HEALTH_POLL s on a thread, recording each status (or error)."""

    def __init__(self, server):
        self.server = server
        self.statuses = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.done.is_set():
            try:
                self.statuses.append(http_status(self.server, "/healthz")[0])
            except OSError as error:
                self.statuses.append(repr(error))
            self.done.wait(HEALTH_POLL)

    def stop(self):
        self.done.set()
        self.thread.join(TIMEOUT)
        return list(self.statuses)


class Inbox:
    """Every event a client receives, in order, as ``(namespace, event, args)``."""

    def __init__(self):
        self.events = []
        self.changed = threading.Condition()

    def push(self, namespace, event, *args):
        with self.changed:
            self.events.append((namespace, event, list(args)))
            self.changed.notify_all()

    def of(self, event, namespace="/"):
        with self.changed:
            return self._of(event, namespace)

    def _of(self, event, namespace):
        return [a for ns, e, a in self.events if (ns, e) == (namespace, event)]

    def wait(self, event, count=1, namespace="/", timeout=TIMEOUT):
        """The arguments of the first ``count`` ``event``s in ``namespace``."""
        with self.changed:
            if not self.changed.wait_for(
                lambda: len(self._of(event, namespace)) >= count, timeout
            ):
                raise AssertionError(
                    f"no {namespace} '{event}' #{count} within {timeout} s; "
                    f"received: {self.events!r}"
                )
            return self._of(event, namespace)[:count]


class BridgeTest(unittest.TestCase):
    """Starts halley, clients and broker connections, and cleans them up."""

    def halley(self, *args):
        server = Halley("--amqp-url", AMQP_URL, *args)

        def stop():
            code = server.stop()
            self.assertEqual(code, 0, f"halley exit code; output:\n{server.logs()}")

        self.addCleanup(stop)
        server.wait_connected()
        return server

    def client(self, server, namespaces=("/",), transports=("websocket",), headers=None):
        sio = socketio.Client(reconnection=False)
        sio.inbox = Inbox()
        for ns in namespaces:
            sio.on("*", lambda event, *args, ns=ns: sio.inbox.push(ns, event, *args), namespace=ns)
            sio.on(
                "disconnect",
                lambda reason=None, ns=ns: sio.inbox.push(ns, "disconnect", reason),
                namespace=ns,
            )
        self.addCleanup(sio.shutdown)
        sio.connect(
            server.url,
            headers=headers or {},
            transports=list(transports),
            namespaces=list(namespaces),
            wait_timeout=TIMEOUT,
        )
        return sio

    def broker(self):
        conn, chan = broker()

        def close():
            try:
                conn.close()
            except pika.exceptions.AMQPError:
                pass  # already closed, or lost with a broker restart

        self.addCleanup(close)
        return conn, chan

    def consume_one(self, chan, queue, accept=lambda method, props, body: True):
        """The next message on ``queue`` that ``accept`` takes (others are skipped), acked."""
        deadline = time.monotonic() + TIMEOUT
        try:
            for method, props, body in chan.consume(queue, inactivity_timeout=TIMEOUT):
                if method is None:
                    break
                chan.basic_ack(method.delivery_tag)
                if accept(method, props, body):
                    return method, props, body
                if time.monotonic() >= deadline:
                    break
        finally:
            chan.cancel()
        self.fail(f"no message on {queue} within {TIMEOUT} s")


def publish(chan, queue, body, content_type="application/json", headers=None):
    if not isinstance(body, bytes):
        body = body.encode()
    chan.basic_publish(
        exchange="",
        routing_key=queue,
        body=body,
        properties=pika.BasicProperties(
            content_type=content_type, headers=headers, delivery_mode=1
        ),
        mandatory=True,
    )


class SeedScenarioTests(BridgeTest):
    """The write-up's pipeline: producter.py → queue ``socket.io`` → ``news`` in the browser."""

    def seed(self, transport):
        _, chan = self.broker()
        try:
            chan.queue_purge(SEED_QUEUE)
        except pika.exceptions.ChannelClosedByBroker as error:
            if error.reply_code != 404:
                raise
            _, chan = self.broker()  # no queue yet: halley declares it
        server = self.halley("--amqp-queue", SEED_QUEUE)
        consumers = chan.queue_declare(SEED_QUEUE, passive=True).method.consumer_count
        self.assertEqual(consumers, 1, "another consumer on socket.io would take messages")
        if transport == "polling":
            # python-engineio refuses a polling payload of more than 16 packets ("Too many
            # packets in payload" → "Unexpected packet from server, aborting" → disconnect with
            # "transport error"), and halley, like the reference Node server, answers a poll
            # with every packet queued: the seed's burst of 20 often comes in one payload.
            patch = mock.patch.object(engineio.payload.Payload, "max_decode_packets", 64)
            patch.start()
            self.addCleanup(patch.stop)
        sio = self.client(server, transports=[transport])
        self.assertEqual(sio.transport(), transport)

        run = subprocess.run(
            [sys.executable, str(PRODUCER)],
            env=dict(os.environ, AMQP_URL=AMQP_URL),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        self.assertEqual(run.returncode, 0, run.stderr)
        # A last message after the seed's 20: once it is in, no further `news` can follow.
        publish(chan, SEED_QUEUE, '"end"', headers={"x-event": "end"})
        sio.inbox.wait("end")

        expected = []
        for count in range(10, 0, -1):
            expected.append([json.dumps("text %d" % count)])
            expected.append([{"no": count, "some": "Message", "比如": "中文信息"}])
        self.assertEqual(sio.inbox.of("news"), expected)
        self.assertEqual(expected[0], ['"text 10"'], "text/plain arrives as the string it is")
        health = server.health()["amqp"]
        self.assertEqual(health["rejected"], 0)
        self.assertGreaterEqual(health["acked"], 21)
        self.assertEqual(chan.queue_declare(SEED_QUEUE, passive=True).method.message_count, 0)

    def test_seed_websocket(self):
        self.seed("websocket")

    def test_seed_polling(self):
        self.seed("polling")


class HeaderTests(BridgeTest):
    """x-event, x-namespace, x-socket, x-room choose what is emitted to whom."""

    def setUp(self):
        self.queue = unique()
        _, self.chan = self.broker()
        self.addCleanup(self.delete_queue)
        self.server = self.halley(
            "--amqp-queue", self.queue, "--namespace", "/chat", "--subscribe-pattern", "room-*"
        )

    def delete_queue(self):
        _, chan = broker()
        chan.queue_delete(self.queue)
        chan.connection.close()

    def test_event_and_namespace(self):
        a = self.client(self.server, namespaces=["/", "/chat"])
        b = self.client(self.server, namespaces=["/", "/chat"], transports=["polling"])
        publish(self.chan, self.queue, '{"n": 1}', headers={"x-event": "tick", "x-namespace": "/chat"})
        publish(self.chan, self.queue, "plain", "text/plain; charset=utf-8", {"x-event": "tock"})
        for sio in (a, b):
            self.assertEqual(sio.inbox.wait("tick", namespace="/chat"), [[{"n": 1}]])
            self.assertEqual(sio.inbox.wait("tock"), [["plain"]])
            self.assertEqual(sio.inbox.of("tick"), [], "not on /")
            self.assertEqual(sio.inbox.of("tock", "/chat"), [], "not on /chat")
            self.assertEqual(sio.inbox.of("news"), [])

    def test_binary_body(self):
        sio = self.client(self.server)
        publish(self.chan, self.queue, b"\x00\x01\xff", "application/octet-stream")
        publish(self.chan, self.queue, b"raw", None, {"x-event": "untyped"})
        self.assertEqual(sio.inbox.wait("news"), [[b"\x00\x01\xff"]])
        self.assertEqual(sio.inbox.wait("untyped"), [[b"raw"]])

    def test_socket_targets_one_client(self):
        a = self.client(self.server, namespaces=["/chat"])
        b = self.client(self.server, namespaces=["/chat"])
        sid = a.get_sid("/chat")
        publish(
            self.chan, self.queue, '"for a"', headers={"x-namespace": "/chat", "x-socket": sid}
        )
        publish(self.chan, self.queue, '"for all"', headers={"x-namespace": "/chat"})
        b.inbox.wait("news", namespace="/chat")
        self.assertEqual(a.inbox.wait("news", 2, "/chat"), [["for a"], ["for all"]])
        self.assertEqual(b.inbox.of("news", "/chat"), [["for all"]])

    def test_rooms(self):
        a = self.client(self.server, namespaces=["/chat"])
        b = self.client(self.server, namespaces=["/chat"])
        # The no-code subscribe convention: a room name or an array of names.
        self.assertEqual(
            a.call("subscribe", ["room-a", "room-b"], namespace="/chat", timeout=TIMEOUT),
            {"ok": True, "rooms": ["room-a", "room-b"]},
        )
        self.assertEqual(
            b.call("subscribe", "room-b", namespace="/chat", timeout=TIMEOUT),
            {"ok": True, "rooms": ["room-b"]},
        )
        chat = {"x-namespace": "/chat"}
        publish(self.chan, self.queue, '"a only"', headers={**chat, "x-room": "room-a"})
        publish(self.chan, self.queue, '"both"', headers={**chat, "x-room": ["room-a", "room-b"]})
        publish(self.chan, self.queue, '"none"', headers={**chat, "x-room": "room-c"})
        publish(self.chan, self.queue, '"all"', headers=chat)
        self.assertEqual(
            a.inbox.wait("news", 3, "/chat"), [["a only"], ["both"], ["all"]],
            "a socket in two targeted rooms gets the message once",
        )
        self.assertEqual(b.inbox.wait("news", 2, "/chat"), [["both"], ["all"]])
        # `all` came last: nothing more can be on its way.
        self.assertEqual(len(a.inbox.of("news", "/chat")), 3)
        self.assertEqual(len(b.inbox.of("news", "/chat")), 2)


class MalformedTests(BridgeTest):
    """A message that cannot be mapped is rejected without requeue: dead-lettered if the queue
    says so, counted, and the queue goes on."""

    def setUp(self):
        self.queue = unique("halley-test-dlx-q")
        self.dlx = unique("halley-test-dlx")
        self.dlq = unique("halley-test-dlq")
        _, self.chan = self.broker()
        self.chan.exchange_declare(self.dlx, "fanout")
        self.chan.queue_declare(self.dlq)
        self.chan.queue_bind(self.dlq, self.dlx)
        self.chan.queue_declare(
            self.queue, durable=True, arguments={"x-dead-letter-exchange": self.dlx}
        )
        self.addCleanup(self.delete)

    def delete(self):
        _, chan = broker()
        chan.queue_delete(self.queue)
        chan.queue_delete(self.dlq)
        chan.exchange_delete(self.dlx)
        chan.connection.close()

    def malformed_then_valid(self, server):
        sio = self.client(server)
        publish(self.chan, self.queue, "{broken")
        publish(self.chan, self.queue, '{"valid": true}')
        self.assertEqual(sio.inbox.wait("news"), [[{"valid": True}]])
        health = server.wait_health(lambda h: h["amqp"]["rejected"] >= 1, what="rejected >= 1")
        self.assertEqual(health["amqp"]["rejected"], 1)
        self.assertTrue(health["amqp"]["connected"], "a rejection does not cost the connection")
        _, props, body = self.consume_one(self.chan, self.dlq)
        self.assertEqual(body, b"{broken")
        self.assertEqual(props.content_type, "application/json")
        (death,) = props.headers["x-death"]
        self.assertEqual((death["reason"], death["queue"]), ("rejected", self.queue))
        self.assertEqual(sio.inbox.of("news"), [[{"valid": True}]])

    def test_passive_queue_dead_letters(self):
        self.malformed_then_valid(self.halley("--amqp-queue", self.queue, "--amqp-queue-passive"))

    def test_existing_queue_with_arguments_is_used_as_is(self):
        # Without --amqp-queue-passive: a plain declare would conflict with x-dead-letter-exchange
        # (406 PRECONDITION_FAILED); the bridge uses an existing queue as it is.
        self.malformed_then_valid(self.halley("--amqp-queue", self.queue))

    def test_passive_missing_queue_is_reported(self):
        missing = unique()
        server = Halley("--amqp-url", AMQP_URL, "--amqp-queue", missing, "--amqp-queue-passive")
        self.addCleanup(server.stop)
        health = server.wait_health(
            lambda h: h["amqp"]["last_error"] is not None, what="amqp last_error"
        )
        self.assertFalse(health["amqp"]["connected"])
        self.assertIn(missing, health["amqp"]["last_error"])
        _, chan = self.broker()
        with self.assertRaises(pika.exceptions.ChannelClosedByBroker) as refused:
            chan.queue_declare(missing, passive=True)
        self.assertEqual(refused.exception.reply_code, 404, "passive mode declared nothing")


class OutboundTests(BridgeTest):
    """Client events no handler takes go to the publish exchange; acks come back by reply_to."""

    def setUp(self):
        _, self.chan = self.broker()
        # As halley declares it (a durable topic exchange), so the two declares agree.
        self.chan.exchange_declare(EXCHANGE, "topic", durable=True)
        self.queue = self.chan.queue_declare("", exclusive=True).method.queue
        self.chan.queue_bind(self.queue, EXCHANGE, "#")
        self.server = self.halley("--amqp-publish-exchange", EXCHANGE, "--amqp-forward-cookie")

    def from_socket(self, sid, event):
        return lambda method, props, body: (
            method.routing_key == event and (props.headers or {}).get("x-socket") == sid
        )

    def test_unhandled_event_is_published(self):
        for transport in ("websocket", "polling"):
            with self.subTest(transport=transport):
                # The peer is loopback, a trusted proxy by default: the client it names in
                # X-Forwarded-For (rightmost untrusted entry) is the remote address.
                sio = self.client(
                    self.server,
                    transports=[transport],
                    headers={"Cookie": "session=abc", "X-Forwarded-For": "10.6.6.6, 203.0.113.9"},
                )
                sid = sio.get_sid("/")
                sio.emit("my other event", {"my": "data"})
                method, props, body = self.consume_one(
                    self.chan, self.queue, self.from_socket(sid, "my other event")
                )
                self.assertEqual(method.exchange, EXCHANGE)
                self.assertEqual(body, b'[{"my":"data"}]')
                self.assertEqual(props.content_type, "application/json")
                self.assertIsNone(props.reply_to, "no ack asked, no reply wanted")
                headers = props.headers
                self.assertEqual(headers["x-namespace"], "/")
                self.assertEqual(headers["x-socket"], sid)
                self.assertEqual(headers["x-transport"], transport)
                self.assertEqual(headers["x-remote-address"], "203.0.113.9")
                self.assertEqual(headers["x-cookie"], "session=abc")
                sio.disconnect()
        self.assertGreaterEqual(self.server.health()["amqp"]["published"], 2)

    def test_ack_answered_by_reply(self):
        sio = self.client(self.server)
        sid = sio.get_sid("/")
        result = {}

        def call():
            try:
                result["value"] = sio.call("question", 42, timeout=TIMEOUT)
            except Exception as error:  # reported below
                result["error"] = error

        caller = threading.Thread(target=call)
        caller.start()
        _, props, body = self.consume_one(
            self.chan, self.queue, self.from_socket(sid, "question")
        )
        self.assertEqual(body, b"[42]")
        self.assertTrue(props.reply_to and props.correlation_id, props)
        self.assertNotIn("x-cookie", props.headers, "no Cookie header, no x-cookie")
        self.chan.basic_publish(
            exchange="",
            routing_key=props.reply_to,
            body=json.dumps(["answer", 42]),
            properties=pika.BasicProperties(
                content_type="application/json", correlation_id=props.correlation_id
            ),
        )
        caller.join(TIMEOUT)
        self.assertFalse(caller.is_alive(), "call did not return")
        self.assertEqual(result, {"value": ("answer", 42)})


class RefusedEventTests(BridgeTest):
    """A client event whose name cannot be an AMQP routing key (over 255 bytes) is refused:
    the ack says why, the refusal is counted, and the bridge goes on both ways."""

    def setUp(self):
        self.work = unique()
        _, self.chan = self.broker()
        self.chan.exchange_declare(EXCHANGE, "topic", durable=True)
        self.tap = self.chan.queue_declare("", exclusive=True).method.queue
        self.chan.queue_bind(self.tap, EXCHANGE, "#")
        self.addCleanup(self.delete_queue)
        self.server = self.halley("--amqp-publish-exchange", EXCHANGE, "--amqp-queue", self.work)

    def delete_queue(self):
        _, chan = broker()
        chan.queue_delete(self.work)
        chan.connection.close()

    def test_over_long_event_name_is_refused_and_the_bridge_lives_on(self):
        sio = self.client(self.server)
        sid = sio.get_sid("/")
        long_name = "n" * 300
        sio.emit(long_name, {"no": "ack"})
        self.assertEqual(
            sio.call(long_name, 1, timeout=TIMEOUT),
            {"error": "event name too long for AMQP (max 255 bytes)"},
        )
        sio.emit("after", 2)
        method, _, body = self.consume_one(
            self.chan,
            self.tap,
            lambda method, props, body: (props.headers or {}).get("x-socket") == sid,
        )
        self.assertEqual((method.routing_key, body), ("after", b"[2]"), "the refused never left")
        publish(self.chan, self.work, '"still consuming"')
        self.assertEqual(sio.inbox.wait("news"), [["still consuming"]])
        health = self.server.health()["amqp"]
        self.assertEqual(health["publish_refused"]["event_name"], 2)
        self.assertTrue(health["connected"])
        self.assertEqual((health["connects"], health["restarts"]), (1, 0))
        self.assertEqual(http_status(self.server, "/readyz", admin=False)[0], 200)
        with DIRECT.open(self.server.admin + "/metrics", timeout=2) as res:
            metrics = res.read().decode()
        self.assertIn('halley_amqp_publish_refused_total{reason="event_name"} 2', metrics)


class BindingTests(BridgeTest):
    """--amqp-bind consumes an exchange through a private queue, next to --amqp-queue."""

    def setUp(self):
        self.queue = unique()
        self.exchange = unique("halley-test-ex")
        self.addCleanup(self.delete)
        self.server = self.halley(
            "--amqp-queue", self.queue, "--amqp-bind", f"{self.exchange}:news.#"
        )
        _, self.chan = self.broker()

    def delete(self):
        _, chan = broker()
        chan.queue_delete(self.queue)
        chan.exchange_delete(self.exchange)
        chan.connection.close()

    def send_both(self, n):
        publish(self.chan, self.queue, json.dumps(f"queue {n}"))
        for key in ("news.sport", "weather"):  # only the first matches the pattern
            self.chan.basic_publish(
                self.exchange,
                key,
                json.dumps(f"{key} {n}"),
                pika.BasicProperties(content_type="application/json"),
            )

    def test_queue_and_binding(self):
        sio = self.client(self.server)
        self.send_both(1)
        received = sorted(a for (a,) in sio.inbox.wait("news", 2))
        self.assertEqual(received, ["news.sport 1", "queue 1"])

    def test_deleted_queue_is_consumed_again(self):
        # The broker cancels the consumer of a deleted queue: the bridge must not go on with the
        # binding alone (and /healthz saying connected) but reconnect and declare the queue again.
        sio = self.client(self.server)
        self.chan.queue_delete(self.queue)
        self.server.wait_connected(connects=2)
        self.send_both(2)
        received = sorted(a for (a,) in sio.inbox.wait("news", 2))
        self.assertEqual(received, ["news.sport 2", "queue 2"])
        self.assertIn("cancelled", self.server.health()["amqp"]["last_error"])


@unittest.skipIf(
    os.environ.get("HALLEY_SKIP_BROKER_RESTART") == "1", "HALLEY_SKIP_BROKER_RESTART=1"
)
class BrokerRestartTests(BridgeTest):
    """RabbitMQ restarts under a running halley: browsers stay connected, the bridge comes back,
    ``/readyz`` says 503 while the broker is away and ``/healthz`` stays 200."""

    def rabbitmqctl(self, *args):
        run = subprocess.run(
            ["rabbitmqctl", *args], capture_output=True, text=True, timeout=RESTART_TIMEOUT
        )
        self.assertEqual(run.returncode, 0, f"rabbitmqctl {' '.join(args)}: {run.stderr}")

    def test_broker_restart_mid_stream(self):
        queue = unique()
        self.addCleanup(self.delete_queue, queue)  # after halley stops
        server = self.halley("--amqp-queue", queue)
        sio = self.client(server)
        _, chan = self.broker()
        for n in range(1, 6):
            publish(chan, queue, str(n))
        self.assertEqual(sio.inbox.wait("news", 5), [[n] for n in range(1, 6)])
        connects = server.health()["amqp"]["connects"]

        self.addCleanup(self.rabbitmqctl, "start_app")  # whatever happens below
        self.rabbitmqctl("stop_app")
        server.wait_health(lambda h: not h["amqp"]["connected"], what="amqp disconnected")
        self.rabbitmqctl("start_app")
        server.wait_connected(connects + 1, RESTART_TIMEOUT)

        # The test's own connection died with the broker; messages published while it was down
        # cannot be (pika fails), which is not tested here.
        _, chan = self.broker()
        for n in range(6, 11):
            publish(chan, queue, str(n))
        publish(chan, queue, '"end"', headers={"x-event": "end"})
        sio.inbox.wait("end")
        self.assertEqual(sio.inbox.of("news"), [[n] for n in range(1, 11)], "each exactly once")
        self.assertTrue(sio.connected)
        self.assertEqual(sio.inbox.of("disconnect"), [], "the client stayed connected")
        self.assertGreaterEqual(server.health()["amqp"]["connects"], connects + 1)

    def test_readyz_follows_the_broker_healthz_stays_up(self):
        queue = unique()
        self.addCleanup(self.delete_queue, queue)  # after halley stops
        server = self.halley("--amqp-queue", queue)
        watch = HealthzWatch(server)
        self.addCleanup(watch.stop)
        self.assertEqual(http_status(server, "/readyz"), (200, {"status": "ready"}))

        self.addCleanup(self.rabbitmqctl, "start_app")  # whatever happens below
        self.rabbitmqctl("stop_app")
        down = wait_status(server, "/readyz", 503, TIMEOUT)
        self.assertEqual(down["status"], "unavailable")
        self.assertFalse(down["amqp"]["connected"])
        self.assertEqual(
            http_status(server, "/readyz", admin=False),
            (503, {"status": "unavailable"}),
            "the public listener tells load balancers the status and nothing else",
        )
        self.assertEqual(http_status(server, "/healthz")[0], 200, "alive without the broker")

        self.rabbitmqctl("start_app")
        self.assertEqual(
            wait_status(server, "/readyz", 200, RESTART_TIMEOUT), {"status": "ready"}
        )
        self.assertTrue(server.health()["amqp"]["connected"])

        statuses = watch.stop()
        self.assertGreater(len(statuses), 10, "/healthz was asked throughout")
        self.assertEqual(
            [s for s in statuses if s != 200], [], "/healthz answered 200 every time"
        )

    def delete_queue(self, queue):
        _, chan = broker()
        chan.queue_delete(queue)
        chan.connection.close()


if __name__ == "__main__":
    unittest.main()
