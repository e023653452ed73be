"""Interoperability of Halley's Socket.IO v5 server with the official Python client.

Server under test: the ``interop_server`` example (see examples/interop_server.rs). Build it
first (``cargo build --release --example interop_server``), then, from this folder::

    python3 -m venv /tmp/pyvenv && /tmp/pyvenv/bin/pip install -r requirements.txt
    /tmp/pyvenv/bin/python -m unittest -v test_socketio.py

``HALLEY_EXAMPLES`` names the folder of the compiled examples (default
``../../../target/release/examples`` relative to this file). ``HALLEY_SERVER_LOG=1`` prints the
server's output when it stops.

Every test runs with ``socketio.Client`` (the synchronous client) over polling only and over
websocket only. Waits are bounded (``TIMEOUT``); nothing sleeps to wait.
"""

import os
import queue
import signal
import subprocess
import threading
import unittest
from pathlib import Path

import engineio
import socketio

TIMEOUT = 5.0
HERE = Path(__file__).resolve().parent
EXAMPLES = Path(
    os.environ.get("HALLEY_EXAMPLES", HERE / ".." / ".." / ".." / "target" / "release" / "examples")
).resolve()
SERVER_BINARY = EXAMPLES / "interop_server"
LISTENING = "listening on "


class Server:
    """The example binary started with PORT=0; ``url`` is read from its first stdout line."""

    def __init__(self, binary):
        env = dict(os.environ, PORT="0")
        self.process = subprocess.Popen(
            [str(binary)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.output = []
        lines = queue.Queue()

        def drain():
            # Keeps reading for the whole life of the process, so it never blocks on a full pipe.
            for line in self.process.stdout:
                self.output.append(line)
                lines.put(line)
            lines.put(None)

        self.drain = threading.Thread(target=drain, daemon=True)
        self.drain.start()
        try:
            line = lines.get(timeout=TIMEOUT)
        except queue.Empty:
            self.process.kill()
            raise RuntimeError(f"{binary} printed nothing within {TIMEOUT} s") from None
        if line is None or not line.startswith(LISTENING):
            self.process.kill()
            raise RuntimeError(f"{binary}: unexpected first line {line!r}; output: {self.logs()}")
        self.url = line[len(LISTENING):].strip()

    def logs(self):
        return "".join(self.output)

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
        return code


server = None


def setUpModule():
    global server
    server = Server(SERVER_BINARY)


def tearDownModule():
    code = server.stop()
    if os.environ.get("HALLEY_SERVER_LOG") == "1":
        print(server.logs())
    if code != 0:
        raise RuntimeError(f"server exit code {code}; output: {server.logs()}")


class Inbox:
    """Every event a client receives, in order; ``wait`` returns the n-th one's arguments."""

    def __init__(self):
        self.events = []
        self.changed = threading.Condition()

    def push(self, event, *args):
        with self.changed:
            self.events.append((event, list(args)))
            self.changed.notify_all()

    def of(self, event):
        with self.changed:
            return [args for name, args in self.events if name == event]

    def wait(self, event, count=1, timeout=TIMEOUT):
        with self.changed:
            if not self.changed.wait_for(lambda: len(self._of(event)) >= count, timeout):
                raise AssertionError(
                    f"no '{event}' #{count} within {timeout} s; received: {self.events!r}"
                )
            return self._of(event)[count - 1]

    def _of(self, event):
        return [args for name, args in self.events if name == event]


class SocketIoTests:
    """The scenarios; subclasses set TRANSPORTS."""

    TRANSPORTS = None

    def client(self, namespace="/", auth=None, connect=True):
        sio = socketio.Client(reconnection=False)
        inbox = Inbox()
        sio.inbox = inbox
        sio.on("*", inbox.push, namespace=namespace)
        sio.on("connect", lambda: inbox.push("connect"), namespace=namespace)
        sio.on(
            "connect_error",
            lambda data=None: inbox.push("connect_error", data),
            namespace=namespace,
        )
        sio.on(
            "disconnect",
            lambda reason=None: inbox.push("disconnect", reason),
            namespace=namespace,
        )
        self.addCleanup(sio.shutdown)
        if connect:
            sio.connect(
                server.url,
                transports=self.TRANSPORTS,
                namespaces=[namespace],
                auth=auth,
                wait_timeout=TIMEOUT,
            )
        return sio

    def welcomed(self):
        sio = self.client()
        self.assertEqual(sio.transport(), self.TRANSPORTS[0])
        (welcome,) = sio.inbox.wait("welcome")
        self.assertEqual(welcome, {"id": sio.get_sid("/")})
        return sio

    def test_connect_and_welcome(self):
        sio = self.welcomed()
        self.assertTrue(sio.connected)
        self.assertNotEqual(sio.get_sid("/"), sio.sid, "socket id differs from the engine sid")
        self.assertEqual(sio.inbox.of("connect"), [[]])

    def test_heartbeats(self):
        # The server pings every 300 ms; count the client's pongs (through the engine.io client's
        # packet writer: the public API has no ping event) and check the connection still works.
        sio = self.welcomed()
        pongs = Inbox()
        send_packet = sio.eio._send_packet

        def counting(pkt):
            if pkt.packet_type == engineio.packet.PONG:
                pongs.push("pong")
            return send_packet(pkt)

        sio.eio._send_packet = counting
        pongs.wait("pong", count=3, timeout=3 * 0.3 + TIMEOUT)
        sio.emit("echo", "after pings")
        self.assertEqual(sio.inbox.wait("echo"), ["after pings"])
        self.assertTrue(sio.connected)
        self.assertEqual(sio.inbox.of("disconnect"), [])

    def test_echo(self):
        sio = self.welcomed()
        payload = {"z": 1, "a": {"y": [1, {"b": 2, "a": 1}], "x": None}, "text": "ünïcødé ✓ 🚀"}
        sio.emit("echo", payload)
        (got,) = sio.inbox.wait("echo")
        self.assertEqual(got, payload)
        self.assertEqual(list(got), ["z", "a", "text"], "key order preserved")
        self.assertEqual(list(got["a"]["y"][1]), ["b", "a"])
        # Several arguments: a tuple.
        sio.emit("echo", ("one", 2, [3]))
        self.assertEqual(sio.inbox.wait("echo", count=2), ["one", 2, [3]])

    def test_binary_echo(self):
        sio = self.welcomed()
        data = bytes(range(256))
        sio.emit("echo", ({"label": "bin", "data": data}, b"\x00\x01"))
        got, raw = sio.inbox.wait("echo")
        self.assertEqual(got, {"label": "bin", "data": data})
        self.assertIsInstance(got["data"], bytes)
        self.assertEqual(raw, b"\x00\x01")

    def test_call_ack_me(self):
        sio = self.welcomed()
        data = {"b": [1, 2], "c": {"z": 0, "a": 1}}
        self.assertEqual(sio.call("ack-me", data, timeout=TIMEOUT), data)
        self.assertEqual(sio.call("ack-me", ("x", 1), timeout=TIMEOUT), ("x", 1))
        self.assertEqual(sio.call("ack-me", b"\x01\x02", timeout=TIMEOUT), b"\x01\x02")

    def test_server_to_client_ack(self):
        sio = self.welcomed()
        questions = []

        def question(*args):
            questions.append(list(args))
            return "my answer", {"to": args[0]}

        sio.on("question", question)
        sio.emit("ask", ("what is it?", 7))
        answer = sio.inbox.wait("answer")
        self.assertEqual(questions, [["what is it?", 7]])
        self.assertEqual(answer, ["my answer", {"to": "what is it?"}])

    def test_client_disconnect(self):
        sio = self.welcomed()
        sio.disconnect()
        (reason,) = sio.inbox.wait("disconnect")
        self.assertEqual(reason, socketio.Client.reason.CLIENT_DISCONNECT)
        self.assertFalse(sio.connected)

    def test_server_disconnect(self):
        sio = self.welcomed()
        sio.emit("disconnect-me")
        (reason,) = sio.inbox.wait("disconnect")
        self.assertEqual(reason, socketio.Client.reason.SERVER_DISCONNECT)

    def test_admin_auth(self):
        sio = self.client("/admin", auth={"token": "secret"})
        (welcome,) = sio.inbox.wait("admin-welcome")
        self.assertEqual(welcome, {"id": sio.get_sid("/admin")})

        refused = self.client("/admin", auth={"token": "wrong"}, connect=False)
        with self.assertRaises(socketio.exceptions.ConnectionError):
            refused.connect(
                server.url,
                transports=self.TRANSPORTS,
                namespaces=["/admin"],
                auth={"token": "wrong"},
                wait_timeout=TIMEOUT,
            )
        (data,) = refused.inbox.wait("connect_error")
        self.assertEqual(data, {"message": "not authorized", "data": {"code": 401}})


class PollingTests(SocketIoTests, unittest.TestCase):
    TRANSPORTS = ["polling"]


class WebSocketTests(SocketIoTests, unittest.TestCase):
    TRANSPORTS = ["websocket"]


if __name__ == "__main__":
    unittest.main()
