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
  var self = this, W = wsClass(), ws;
  try {
    ws = this.ws = new W(this.uri('ws'));
  } catch (e) {
    return setTimeout(function () {
      self.onError('websocket error');
    }, 0);
  }
  ws.binaryType = 'arraybuffer';
  ws.onopen = function () {
    self.onOpen();
  };
  ws.onclose = function () {
    self.onClose('transport close');
  };
  ws.onerror = function () {
    self.onError('websocket error');
  };
  ws.onmessage = function (e) {
    self.onPacket(decodePacket(e.data));
  };
};

WS.prototype.write = function (packets) {
  var self = this, i;
  this.writable = false;
  for (i = 0; i < packets.length; i++) {
    try {
      this.ws.send(encodePacket(packets[i], false));
    } catch (e) {}
  }
  // Drained asynchronously, so that the engine's flush does not reenter itself.
  setTimeout(function () {
    self.writable = true;
    self.emit('drain');
  }, 0);
};

WS.prototype.doClose = function () {
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
