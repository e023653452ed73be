/* A namespace socket, socket.io-client's Socket: connects to its namespace over the Manager's
   connection (with `auth`), buffers emits until then, numbers acks, and reconnects with the
   Manager.

   Connection state recovery, as socket.io-client does it: a server that recovers connections
   sends a private id `pid` with CONNECT and each event's offset as its last argument; the socket
   keeps both and sends them back in the auth of its next CONNECT, and `recovered` says whether
   the server gave the same session back (its missed events arrive before 'connect').

   Events: 'connect', 'connect_error' (err, with err.data from the server), 'disconnect'
   (reason: 'io server disconnect', 'io client disconnect', 'transport close',
   'transport error', 'ping timeout', 'parse error'), and the server's events. */

/* Emits an event of the socket itself, bypassing emit()'s reserved-name check. */
var fire = Emitter.prototype.emit;

var RESERVED = { connect: 1, connect_error: 1, disconnect: 1, disconnecting: 1, newListener: 1, removeListener: 1 };

function Socket(io, nsp, opts) {
  this.io = io;
  this.nsp = nsp;
  this.ids = 0;
  this.acks = {};
  this.receiveBuffer = [];
  this.sendBuffer = [];
  this.flags = {};
  this.connected = false;
  this.disconnected = true;
  this.active = false;
  this.recovered = false;
  if (opts && opts.auth) this.auth = opts.auth;
  var self = this;
  // socket.volatile.emit(...): dropped unless it can be sent now.
  this['volatile'] = {
    emit: function () {
      self.flags['volatile'] = true;
      return self.emit.apply(self, arguments);
    }
  };
  if (io.autoConnect) this.open();
}
Emitter(Socket.prototype);

function sub(obj, ev, fn) {
  obj.on(ev, fn);
  return function () {
    obj.off(ev, fn);
  };
}

Socket.prototype.open = Socket.prototype.connect = function () {
  var self = this, io = this.io;
  if (this.connected) return this;
  if (!this.subs) {
    this.subs = [
      sub(io, 'open', function () {
        self.onopen();
      }),
      sub(io, 'packet', function (p) {
        if (p.nsp === self.nsp) self.onpacket(p);
      }),
      sub(io, 'error', function (err) {
        if (!self.connected) fire.call(self, 'connect_error', err);
      }),
      sub(io, 'close', function (reason) {
        self.onclose(reason);
      }),
      // Socket.IO 0.9's events, which its pages listen for on the socket.
      sub(io, 'transport', function (ev) {
        if (ev.type === 'try') fire.call(self, 'connecting', ev.name);
      }),
      sub(io, 'error', function () {
        if (!io._reconnection) fire.call(self, 'connect_failed');
      }),
      sub(io, 'reconnect_attempt', function (n) {
        fire.call(self, 'reconnecting', io.delay, n);
      }),
      sub(io, 'reconnect', function (n) {
        fire.call(self, 'reconnect', io.engine.transport.name, n);
      }),
      sub(io, 'reconnect_failed', function () {
        fire.call(self, 'reconnect_failed');
        fire.call(self, 'connect_failed');
      })
    ];
    this.active = true;
  }
  if (!io.reconnecting) io.open();
  if (io.readyState === 'open') this.onopen();
  return this;
};

Socket.prototype.onopen = function () {
  var self = this;
  if (typeof this.auth === 'function') {
    this.auth(function (data) {
      self.sendConnect(data);
    });
  } else {
    this.sendConnect(this.auth);
  }
};

Socket.prototype.sendConnect = function (data) {
  // The application's auth keys win, as with socket.io-client's Object.assign.
  if (this._pid) data = extend({ pid: this._pid, offset: this._lastOffset }, data || {});
  this.packet({ type: CONNECT, data: data });
};

Socket.prototype.onpacket = function (p) {
  var err;
  switch (p.type) {
    case CONNECT:
      if (p.data && p.data.sid) this.onconnect(p.data.sid, p.data.pid);
      else fire.call(this, 'connect_error', new Error('invalid CONNECT packet'));
      break;
    case EVENT:
    case BINARY_EVENT:
      this.onevent(p);
      break;
    case ACK:
    case BINARY_ACK:
      this.onack(p);
      break;
    case DISCONNECT:
      this.destroy();
      this.onclose('io server disconnect');
      break;
    case CONNECT_ERROR:
      this.destroy();
      err = new Error(p.data && p.data.message || p.data);
      err.data = p.data && p.data.data;
      fire.call(this, 'connect_error', err);
  }
};

Socket.prototype.onconnect = function (id, pid) {
  var i, recv = this.receiveBuffer, send = this.sendBuffer;
  this.id = id;
  this.recovered = !!pid && this._pid === pid;
  this._pid = pid;
  this.connected = true;
  this.disconnected = false;
  this.receiveBuffer = [];
  this.sendBuffer = [];
  for (i = 0; i < recv.length; i++) this.emitEvent(recv[i]);
  for (i = 0; i < send.length; i++) this.packet(send[i]);
  fire.call(this, 'connect');
};

Socket.prototype.onevent = function (p) {
  var args = p.data;
  if (p.id != null) args.push(this.ack(p.id));
  if (this.connected) this.emitEvent(args);
  else this.receiveBuffer.push(args);
};

Socket.prototype.emitEvent = function (args) {
  var any = (this.anyListeners || []).slice(0), i, last = args[args.length - 1];
  for (i = 0; i < any.length; i++) any[i].apply(this, args);
  fire.apply(this, args);
  if (this._pid && typeof last === 'string') this._lastOffset = last;
};

/* The function the application calls to answer an event the server sent with an ack id. */
Socket.prototype.ack = function (id) {
  var self = this, sent = false;
  return function () {
    if (sent) return;
    sent = true;
    self.packet({ type: ACK, id: id, data: slice(arguments) });
  };
};

Socket.prototype.onack = function (p) {
  var fn = this.acks[p.id];
  if (typeof fn === 'function') {
    delete this.acks[p.id];
    fn.apply(this, p.data);
  }
};

/* emit(event, ...args[, ack]): a trailing function is called with the server's ack. */
Socket.prototype.emit = function (ev) {
  var args, flags = this.flags, ack, id, p, t;
  if (hasOwn.call(RESERVED, ev)) throw new Error('"' + ev + '" is a reserved event name');
  args = slice(arguments);
  this.flags = {};
  if (typeof args[args.length - 1] === 'function') {
    ack = args.pop();
    id = this.ids++;
    this.acks[id] = flags.timeout != null ? this.timed(id, flags.timeout, ack) : ack;
  }
  p = { type: EVENT, data: args, id: id };
  if (flags['volatile']) {
    t = this.io.engine && this.io.engine.transport;
    if (!this.connected || !t || !t.writable) return this;
  }
  if (this.connected) this.packet(p);
  else this.sendBuffer.push(p);
  return this;
};

/* The ack `fn` called as fn(err, ...args): err when no ack came within `ms`. */
Socket.prototype.timed = function (id, ms, fn) {
  var self = this, timer = setTimeout(function () {
    var i, buf = self.sendBuffer;
    delete self.acks[id];
    for (i = 0; i < buf.length; i++) if (buf[i].id === id) buf.splice(i, 1);
    fn.call(self, new Error('operation has timed out'));
  }, ms);
  return function () {
    clearTimeout(timer);
    fn.apply(self, [null].concat(slice(arguments)));
  };
};

/* socket.timeout(ms).emit(...): the ack gets an error first argument. */
Socket.prototype.timeout = function (ms) {
  this.flags.timeout = ms;
  return this;
};

/* emitWithAck(...) → a Promise of the ack's first argument (where Promise exists). */
Socket.prototype.emitWithAck = function () {
  var self = this, args = slice(arguments), timed = this.flags.timeout != null;
  return new global.Promise(function (resolve, reject) {
    args.push(function (a, b) {
      if (!timed) resolve(a);
      else if (a) reject(a);
      else resolve(b);
    });
    self.emit.apply(self, args);
  });
};

Socket.prototype.send = function () {
  return this.emit.apply(this, ['message'].concat(slice(arguments)));
};

Socket.prototype.compress = function () {
  return this;
};

Socket.prototype.onAny = function (fn) {
  (this.anyListeners || (this.anyListeners = [])).push(fn);
  return this;
};

Socket.prototype.offAny = function (fn) {
  var list = this.anyListeners || [], i = indexOf(list, fn);
  if (!fn) this.anyListeners = [];
  else if (i >= 0) list.splice(i, 1);
  return this;
};

Socket.prototype.packet = function (p) {
  p.nsp = this.nsp;
  this.io.packet(p);
};

Socket.prototype.onclose = function (reason) {
  if (!this.connected) return;
  this.connected = false;
  this.disconnected = true;
  this.id = void 0;
  fire.call(this, 'disconnect', reason);
};

/* Leaves the namespace for good (until connect() is called again). */
Socket.prototype.disconnect = Socket.prototype.close = function () {
  if (this.connected) this.packet({ type: DISCONNECT });
  this.destroy();
  this.onclose('io client disconnect');
  return this;
};

Socket.prototype.destroy = function () {
  var subs = this.subs, i;
  if (subs) {
    for (i = 0; i < subs.length; i++) subs[i]();
    this.subs = null;
    this.active = false;
  }
  this.io.destroySocket(this);
};
