/* `websocket`: one Engine.IO packet per frame, binary packets as binary frames. */

function WS(opts) {
  Transport.call(this, opts);
}
inherit(WS, Transport);
WS.prototype.name = 'websocket';

function wsClass() {
  return global.WebSocket || global.MozWebSocket;
}

WS.check = function () {
  return !!wsClass();
};

WS.prototype.doOpen = function () {
  this.out = [];
  this.outFrom = this.acked = this.told = 0;
  this.connect();
};

WS.prototype.connect = function () {
  var self = this, W = wsClass(), ws;
  try {
    ws = this.ws = new W(this.uri('ws'));
  } catch (e) {
    return setTimeout(function () {
      self.lost('websocket error');
    }, 0);
  }
  ws.binaryType = 'arraybuffer';
  ws.onopen = function () {
    if (self.readyState === 'opening') self.onOpen();
  };
  // A close with a code (the server's close handshake) ends the session; a connection that
  // broke (1006, or an error) may resume.
  ws.onclose = function (e) {
    self.lost('transport close', e && e.code !== 1006 && e.code != null);
  };
  ws.onerror = function () {
    self.lost('websocket error');
  };
  ws.onmessage = function (e) {
    self.onPacket(decodePacket(e.data));
  };
};

/* Halley resumes a session whose WebSocket broke: the client connects again with its sid and
   the count of packets it read (`ack`); the server first says how many of the client's it
   received (`6s<n>`), then writes what the client did not read. The client sends again what
   the server did not receive, and confirms what it reads (`6<n>`) every 64 packets and with
   each pong, so that neither side keeps much. */
WS.prototype.lost = function (reason, closed) {
  var self = this;
  if (this.resumable && this.readyState === 'open' && !closed) {
    this.drop();
    this.resending = true;
    return this.retry(function () {
      self.connect();
    }, reason, 3);
  }
  if (reason === 'transport close') this.onClose(reason);
  else this.onError(reason);
};

WS.prototype.onPacket = function (p) {
  var m = p.type === 'noop' && /^s(\d+)$/.exec(p.data), n, i;
  if (!m) {
    this.acked++;
    if (this.resumable && this.acked - this.told >= 64) this.tell();
    return Transport.prototype.onPacket.call(this, p);
  }
  n = +m[1];
  this.resumable = true;
  this.out.splice(0, n - this.outFrom);
  this.outFrom = n;
  if (this.resending) {
    this.resending = false;
    this.failures = 0;
    for (i = 0; i < this.out.length; i++) this.put(this.out[i]);
  }
};

WS.prototype.tell = function () {
  this.told = this.acked;
  this.put({ type: 'noop', data: '' + this.acked });
};

WS.prototype.put = function (packet) {
  try {
    this.ws.send(encodePacket(packet, false));
  } catch (e) {}
};

WS.prototype.write = function (packets) {
  var self = this, i;
  this.writable = false;
  for (i = 0; i < packets.length; i++) {
    if (this.resumable) this.out.push(packets[i]);
    if (!this.resending) this.put(packets[i]);
    if (packets[i].type === 'pong' && this.resumable && !this.resending) this.tell();
  }
  // Drained asynchronously, so that the engine's flush does not reenter itself.
  setTimeout(function () {
    self.writable = true;
    self.emit('drain');
  }, 0);
};

WS.prototype.doClose = function () {
  clearTimeout(this.retryTimer);
  this.drop();
};

WS.prototype.drop = function () {
  var ws = this.ws;
  if (ws) {
    this.ws = null;
    ws.onopen = ws.onclose = ws.onerror = ws.onmessage = noop;
    try {
      ws.close();
    } catch (e) {}
  }
};

transports.websocket = WS;
