/* The Engine.IO connection: transport negotiation, handshake, heartbeat watchdog, write buffer
   and the upgrade to WebSocket.

   Negotiation: the candidates are opts.transports in order, the transport that opened the
   Manager's previous connection first (else, with rememberTransport, the stored one). The first whose check() passes is opened; it succeeds when the
   handshake packet arrives, and fails on an error or after connectTimeout, when the next one is
   tried (tryAllTransports). Each step is reported as a 'transport' event:
   {type:'try'|'open'|'fail', name[, reason]} and {type:'upgrade', from, to}.

   Events: 'open', 'data' (a message), 'packet', 'ping', 'upgrading', 'upgrade', 'drain',
   'transport', 'error' (negotiation failed: the connection never opened), 'close' (reason) after
   an open. */

function Engine(opts) {
  this.opts = opts;
  this.readyState = 'closed';
  this.writeBuffer = [];
}
Emitter(Engine.prototype);

/* The engines open on the page, closed when it goes: old IE keeps pending requests (and so one
   of its two connections per host) after the page is gone. */
var live = [];
listen(global, global.addEventListener ? 'pagehide' : 'unload', function () {
  var all = live.slice(0), i;
  for (i = 0; i < all.length; i++) all[i].close();
});

Engine.prototype.open = function () {
  var self = this, o = this.opts, names = o.transports.slice(0), i,
    pref = o.prefer || (o.rememberTransport && loadPref(o));
  if (pref && (i = indexOf(names, pref)) > 0) names.unshift(names.splice(i, 1)[0]);
  this.candidates = names;
  this.tried = [];
  live.push(this);
  this.readyState = 'opening';
  // On the next tick, so that listeners added right after io() see the first step too.
  setTimeout(function () {
    if (self.readyState === 'opening' && !self.pending) self.tryFrom(0);
  }, 0);
  return this;
};

Engine.prototype.report = function (ev) {
  // What was given up is also told to the server, in the next handshake's `tried` parameter
  // (`name:reason,...`, counted in its halley_client_fallbacks metric).
  if (ev.type === 'fail' && this.readyState === 'opening') {
    this.tried.push(ev.name + ':' + (/^(timeout|unsupported|skipped)$/.test(ev.reason) ? ev.reason : 'error'));
  }
  this.emit('transport', ev);
};

Engine.prototype.create = function (name) {
  var t = new transports[name](this.opts);
  if (this.id) t.query.sid = this.id;
  return t;
};

/* Opens the first supported candidate from index i. */
Engine.prototype.tryFrom = function (i) {
  var self = this, names = this.candidates, name, T, t, timer, started;
  for (; i < names.length; i++) {
    name = names[i];
    // `polling` is XHR where it works, else JSONP (engine.io-client 3), or JSONP when forced.
    if (name === 'polling' && this.opts.jsonp && (this.opts.forceJSONP || !transports.polling.check(this.opts))) {
      name = 'jsonp';
    }
    T = hasOwn.call(transports, name) && transports[name];
    if (T && T.check(this.opts)) break;
    this.report({ type: 'fail', name: name, reason: T ? 'unsupported' : 'unknown transport' });
  }
  if (i >= names.length) return this.onError('no transport could connect');

  function fail(reason, refused) {
    var next = i + 1;
    if (self.pending !== t) return;
    self.pending = null;
    clearTimeout(timer);
    t.off();
    t.close();
    if (reason === 'timeout' || /status \d/.test(reason)) self.told = t.telling;
    self.report({ type: 'fail', name: name, reason: reason });
    if (refused || !self.opts.tryAllTransports) return self.onError(reason);
    // A stream held past the timeout: a buffering proxy, which would hold every stream.
    if (reason === 'timeout' && t instanceof Stream) {
      while (next < names.length && (transports[names[next]] || {}).prototype instanceof Stream) {
        self.report({ type: 'fail', name: names[next++], reason: 'skipped' });
      }
    }
    self.tryFrom(next);
  }
  t = this.pending = this.create(name);
  // Each fallback is told once: carried by the handshakes after it until one reaches the
  // server (answered, refused with a status, or held: a timeout), not by all of them.
  t.tried = this.tried.slice(this.told || 0).join(',');
  t.telling = this.tried.length;
  started = now();
  this.report({ type: 'try', name: name });
  timer = setTimeout(function () {
    fail('timeout');
  }, this.rtt ? Math.min(this.opts.connectTimeout, Math.max(250, 4 * this.rtt)) : this.opts.connectTimeout);
  t.on('error', function (e) {
    // A quick failure measures the round trip: the next candidates wait a few of those
    // rather than connectTimeout (a buffering proxy holds a stream's handshake for good).
    self.rtt = Math.max(self.rtt || 0, now() - started);
    // The server refused (403 origin, 503 full or shutting down): every transport would be.
    fail(e.message, /status (403|503)/.test(e.message));
  });
  t.on('close', function (reason) {
    fail(reason);
  });
  t.on('packet', function (p) {
    if (p.type !== 'open') return fail('no handshake');
    self.rtt = now() - started;
    self.pending = null;
    clearTimeout(timer);
    t.off();
    self.setTransport(t);
    self.onHandshake(p.data);
  });
  t.open();
};

Engine.prototype.setTransport = function (t) {
  var self = this;
  if (this.transport) this.transport.off();
  this.transport = t;
  t.on('packet', function (p) {
    self.onPacket(p);
  });
  t.on('drain', function () {
    self.onDrain();
  });
  t.on('error', function () {
    self.onClose('transport error');
  });
  t.on('close', function () {
    self.onClose('transport close');
  });
};

Engine.prototype.onHandshake = function (data) {
  var o = this.opts, t = this.transport, hs;
  try {
    hs = json.parse(data);
  } catch (e) {
    return this.onClose('parse error');
  }
  this.id = t.query.sid = hs.sid;
  t.ping = [hs.pingInterval, hs.pingTimeout / 4];
  this.pingInterval = hs.pingInterval;
  this.pingTimeout = hs.pingTimeout;
  this.maxPayload = hs.maxPayload;
  this.readyState = 'open';
  if (o.rememberTransport) savePref(o, t.name);
  this.report({ type: 'open', name: t.name });
  this.emit('open');
  this.resetWatchdog();
  this.flush();
  if (this.readyState === 'open' && o.upgrade && t.name !== 'websocket' &&
      indexOf(hs.upgrades || [], 'websocket') >= 0 && indexOf(o.transports, 'websocket') >= 0 &&
      transports.websocket.check(o)) {
    this.probe('websocket');
  }
};

/* The server pings every pingInterval; with nothing at all for pingInterval + pingTimeout the
   link is dead (a stream can stall without any error). */
Engine.prototype.resetWatchdog = function () {
  var self = this;
  clearTimeout(this.watchdog);
  this.watchdog = setTimeout(function () {
    self.onClose('ping timeout');
  }, this.pingInterval + this.pingTimeout);
};

Engine.prototype.onPacket = function (p) {
  if (this.readyState === 'closed') return;
  this.resetWatchdog();
  this.emit('packet', p);
  if (p.type === 'ping') {
    this.pinged = true;
    // Ahead of queued messages: a pong stuck behind a large payload would miss pingTimeout.
    this.writeBuffer.unshift({ type: 'pong' });
    this.flush();
    this.emit('ping');
  } else if (p.type === 'message') {
    this.emit('data', p.data);
  } else if (p.type === 'error') {
    this.onClose('parse error');
  }
};

/* The probe: open a WebSocket on the session, `2probe` → `3probe`; then pause the HTTP
   transport (its poll answered, its POST done), send `5` and carry on over the WebSocket. On
   a resumable session (Halley) a stream stops at once and `5<n>` names the position read: the
   server writes what follows on the WebSocket, so nothing is lost or reordered. Otherwise a
   stream is retired rather than cut: the server ends it with a noop once the upgrade
   completes, and what arrives on it until then is still delivered. */
Engine.prototype.probe = function (name) {
  var self = this, t = this.create(name), from = this.transport.name, timer, done = false;
  function fail(reason) {
    if (done) return;
    done = true;
    clearTimeout(timer);
    t.off();
    t.close();
    self.prober = null;
    self.report({ type: 'fail', name: name, reason: 'upgrade: ' + reason });
    if (self.upgrading) {
      self.upgrading = false;
      if (self.transport.resume) self.transport.resume();
      self.flush();
    }
  }
  timer = setTimeout(function () {
    fail('timeout');
  }, this.opts.connectTimeout);
  t.on('open', function () {
    t.send([{ type: 'ping', data: 'probe' }]);
  });
  t.on('error', function (e) {
    fail(e.message);
  });
  t.on('close', function (reason) {
    fail(reason);
  });
  t.on('packet', function (p) {
    if (done) return;
    if (p.type !== 'pong' || p.data !== 'probe') return fail('probe error');
    clearTimeout(timer);
    self.upgrading = true;
    self.emit('upgrading', t);
    self.transport.pause(function () {
      if (done || self.readyState !== 'open') return;
      done = true;
      self.prober = null;
      var old = self.transport;
      t.off();
      self.setTransport(t);
      // `5<n>` for a resumable session: what the HTTP transport read, the rest comes here.
      t.send([{ type: 'upgrade', data: old.resumable ? '' + old.acked : null }]);
      if (old.resumable) {
        t.resumable = true;
        t.acked = old.acked;
        t.outFrom = old.seq || 0;
      }
      self.upgrading = false;
      self.retire(old);
      if (self.opts.rememberTransport) savePref(self.opts, name);
      self.report({ type: 'upgrade', from: from, to: name });
      self.emit('upgrade', t);
      self.flush();
    });
  });
  this.prober = t;
  this.abortProbe = fail;
  t.open();
};

Engine.prototype.retire = function (old) {
  var self = this;
  function end() {
    old.off();
    old.close();
  }
  if (!old.streaming) return end();
  old.on('packet', function (p) {
    self.onPacket(p);
  });
  old.on('streamEnd', end).on('error', end).on('close', end);
};

Engine.prototype.send = Engine.prototype.write = function (data) {
  this.sendPacket('message', data);
};

Engine.prototype.sendPacket = function (type, data) {
  if (this.readyState === 'closed') return;
  this.writeBuffer.push({ type: type, data: data });
  this.flush();
};

Engine.prototype.flush = function () {
  var t = this.transport, buf = this.writeBuffer, n = buf.length, size = 0, max, i;
  if (this.readyState === 'closed' || !t || !t.writable || this.upgrading || !n) return;
  // An HTTP payload over maxPayload would be refused (413): the rest goes in the next POST.
  // A form POST is slow to build (url-encoded, then a frame navigates): smaller ones keep a
  // pong from waiting long behind one.
  max = t.useForm ? Math.min(this.maxPayload, 262144) : this.maxPayload;
  if (t.name !== 'websocket' && max) {
    for (i = 0; i < n; i++) {
      size += byteLength(buf[i].data, t.useForm) + 3;
      if (i && size > max) {
        n = i;
        break;
      }
    }
  }
  this.writeBuffer = buf.slice(n);
  t.send(buf.slice(0, n));
};

/* Size of a packet's data in a POST body (binary as base64): its UTF-8 bytes, or for a form
   POST its url-encoded length, which is what the server holds against maxPayload. A bound
   close enough for splitting payloads. */
function byteLength(d, form) {
  var n = 0, i, c;
  if (d == null) return 0;
  if (typeof d !== 'string') return Math.ceil(d.byteLength * 4 / 3) * (form ? 3 : 1);
  if (form) {
    try {
      return encodeURIComponent(d).length;
    } catch (e) {
      return d.length * 9; // a lone surrogate: the browser will replace it anyway
    }
  }
  for (i = 0; i < d.length; i++) {
    c = d.charCodeAt(i);
    n += c < 0x80 ? 1 : c < 0x800 ? 2 : 3;
  }
  return n;
}

Engine.prototype.onDrain = function () {
  if (this.writeBuffer.length) return this.flush();
  this.emit('drain');
  if (this.readyState === 'closing') this.onClose('forced close');
};

/* Closes after what is buffered has been written (a disconnect packet, typically). */
Engine.prototype.close = function () {
  var t = this.transport;
  if (this.readyState === 'opening') return this.onClose('forced close');
  if (this.readyState !== 'open') return this;
  this.readyState = 'closing';
  // A pending upgrade would hold the write buffer: give it up.
  if (this.prober) this.abortProbe('closing');
  this.flush();
  if (!this.writeBuffer.length && t.writable) this.onClose('forced close');
  return this;
};

Engine.prototype.onError = function (message) {
  var opening = this.readyState === 'opening';
  this.onClose('transport error', true);
  if (opening) this.emit('error', new Error(message));
};

Engine.prototype.onClose = function (reason, silent) {
  var state = this.readyState, t = this.transport, others = [this.pending, this.prober], i;
  if (state === 'closed') return this;
  clearTimeout(this.watchdog);
  if ((i = indexOf(live, this)) >= 0) live.splice(i, 1);
  for (i = 0; i < 2; i++) {
    if (others[i]) others[i].off().close();
  }
  if (t) t.off().close(reason === 'forced close');
  this.transport = this.pending = this.prober = null;
  this.readyState = 'closed';
  this.upgrading = false;
  this.writeBuffer = [];
  this.id = null;
  // With the transport's name: the Manager demotes one that died before its first ping.
  if (!silent && state !== 'opening') this.emit('close', reason, t && t.name);
  return this;
};
