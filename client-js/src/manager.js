/* The Manager: one Engine.IO connection to a server, shared by the namespace sockets created
   through it, and its reconnection: after an unexpected close, new attempts with exponential
   backoff and jitter (socket.io-client's algorithm and defaults).

   Events: 'open', 'close' (reason), 'error' (a connection attempt failed), 'packet', 'ping',
   'transport' (negotiation steps, see Engine), 'reconnect_attempt' (n), 'reconnect' (n),
   'reconnect_error' (err), 'reconnect_failed'. */

function Manager(uri, opts) {
  var loc = global.location, u, secure, port, xd, path;
  if (uri && typeof uri === 'object') {
    opts = uri;
    uri = null;
  }
  opts = this.opts = normalize(opts || {});
  u = parseUrl(absolute(uri));
  // Socket.IO 0.9's host / port / secure options override the URL.
  if (opts.host) u.host = opts.host;
  secure = opts.secure != null ? !!opts.secure : u.protocol === 'https' || u.protocol === 'wss';
  port = opts.port ? '' + opts.port : u.port || (secure ? '443' : '80');
  xd = !loc || !loc.host ||
    loc.protocol !== (secure ? 'https:' : 'http:') ||
    loc.hostname.toLowerCase() !== u.host.replace(/^\[|\]$/g, '').toLowerCase() ||
    (loc.port || (secure ? '443' : '80')) !== port;
  path = (opts.path || '/socket.io').replace(/^\/?/, '/').replace(/\/?$/, '/');
  this.engineOpts = {
    host: u.host,
    port: port,
    secure: secure,
    path: path,
    query: typeof opts.query === 'string' ? decodeQuery(opts.query) : opts.query || {},
    xd: xd,
    sameScheme: !loc || loc.protocol === (secure ? 'https:' : 'http:'),
    upgrade: opts.upgrade !== false,
    forceJSONP: !!opts.forceJSONP,
    jsonp: opts.jsonp !== false,
    connectTimeout: opts.connectTimeout || 10000,
    tryAllTransports: opts.tryAllTransports !== false,
    rememberTransport: !!opts.rememberTransport,
    withCredentials: !!opts.withCredentials
  };
  this.nsps = {};
  this.demoted = {};
  this.readyState = 'closed';
  this.reconnection(opts.reconnection !== false);
  this.reconnectionAttempts(opts.reconnectionAttempts == null ? Infinity : opts.reconnectionAttempts);
  this.reconnectionDelay(opts.reconnectionDelay == null ? 1000 : opts.reconnectionDelay);
  this.reconnectionDelayMax(opts.reconnectionDelayMax == null ? 5000 : opts.reconnectionDelayMax);
  this.randomizationFactor(opts.randomizationFactor == null ? 0.5 : opts.randomizationFactor);
  this.attempts = 0;
  this.autoConnect = opts.autoConnect !== false;
  if (this.autoConnect) this.open();
}
Emitter(Manager.prototype);

var DEFAULT_TRANSPORTS = ['websocket', 'htmlfile', 'xhr-streaming', 'sse', 'iframe', 'polling', 'jsonp'];

/* Option names of Socket.IO 0.9 clients, as old pages pass them to io.connect. */
var LEGACY_OPTIONS = {
  'force new connection': 'forceNew',
  'reconnect': 'reconnection',
  'reconnection delay': 'reconnectionDelay',
  'reconnection limit': 'reconnectionDelayMax',
  'max reconnection attempts': 'reconnectionAttempts',
  'connect timeout': 'connectTimeout',
  'try multiple transports': 'tryAllTransports',
  'resource': 'path'
};

/* Socket.IO 0.9's transport names, as old pages list them: `flashsocket` is left out. */
var LEGACY_TRANSPORTS = { 'xhr-polling': 'polling', 'jsonp-polling': 'jsonp', flashsocket: '' };

/* The candidates: 0.9 names translated, JSONP left out if `jsonp: false`, demoted ones last. */
function transportNames(names, jsonp, demoted) {
  var out = [], last = [], i, n;
  for (i = 0; i < names.length; i++) {
    n = hasOwn.call(LEGACY_TRANSPORTS, names[i]) ? LEGACY_TRANSPORTS[names[i]] : names[i];
    if (n && (jsonp || n !== 'jsonp')) (demoted[n] ? last : out).push(n);
  }
  return out.concat(last);
}

function normalize(opts) {
  var out = extend({}, opts), k;
  for (k in LEGACY_OPTIONS) {
    if (hasOwn.call(opts, k) && !hasOwn.call(opts, LEGACY_OPTIONS[k])) out[LEGACY_OPTIONS[k]] = opts[k];
  }
  return out;
}

/* `uri` made absolute against the page: none means the page's origin, `//host` and `/path`
   are relative to it, a bare `host:port` gets the page's scheme. */
function absolute(uri) {
  var loc = global.location || { protocol: 'http:', host: 'localhost' };
  if (uri == null) return loc.protocol + '//' + loc.host;
  if (uri.charAt(0) === '/') return uri.charAt(1) === '/' ? loc.protocol + uri : loc.protocol + '//' + loc.host + uri;
  if (!/^[a-z][a-z0-9+.\-]*:\/\//i.test(uri)) return loc.protocol + '//' + uri;
  return uri;
}

/* Getter-setters, as socket.io-client has them. */
function option(name) {
  return function (v) {
    if (!arguments.length) return this['_' + name];
    this['_' + name] = v;
    return this;
  };
}
Manager.prototype.reconnection = option('reconnection');
Manager.prototype.reconnectionAttempts = option('reconnectionAttempts');
Manager.prototype.reconnectionDelay = option('reconnectionDelay');
Manager.prototype.reconnectionDelayMax = option('reconnectionDelayMax');
Manager.prototype.randomizationFactor = option('randomizationFactor');

Manager.prototype.open = Manager.prototype.connect = function (fn) {
  var self = this, engine, names;
  if (this.readyState !== 'closed') return this;
  // Read at each attempt: pages change socket.io.opts.transports, e.g. on reconnect_attempt,
  // and then mean their order (the last connection's transport is not put first).
  names = this.opts.transports || DEFAULT_TRANSPORTS;
  if (names.join() !== this.names) this.engineOpts.prefer = null;
  this.names = names.join();
  this.engineOpts.transports = transportNames(names, this.engineOpts.jsonp, this.demoted);
  engine = this.engine = new Engine(this.engineOpts);
  this.readyState = 'opening';
  this.skipReconnect = false;
  this.decoder = new Decoder(function (p) {
    self.emit('packet', p);
  });
  engine.on('transport', function (ev) {
    self.emit('transport', ev);
  });
  engine.on('open', function () {
    // Reconnections try first what worked, rather than time out again on what did not.
    self.engineOpts.prefer = engine.transport.name;
    self.readyState = 'open';
    self.emit('open');
    if (fn) fn();
  });
  engine.on('error', function (err) {
    engine.off();
    self.readyState = 'closed';
    self.emit('error', err);
    if (fn) fn(err);
    else if (self._reconnection) self.reconnect();
  });
  engine.on('close', function (reason, name) {
    // A transport that opened (or was upgraded to), then died before the first ping, is tried
    // last from now on. (Not a close: the server may close a session at once, which says
    // nothing of the path.)
    if (!engine.pinged && (reason === 'transport error' || reason === 'ping timeout')) {
      self.demoted[name] = 1;
      if (self.engineOpts.prefer === name) self.engineOpts.prefer = null;
    }
    self.onclose(reason);
  });
  engine.on('ping', function () {
    self.emit('ping');
  });
  engine.on('data', function (data) {
    try {
      self.decoder.add(data);
    } catch (e) {
      self.onclose('parse error');
      engine.close();
    }
  });
  engine.open();
  return this;
};

/* The socket for namespace `nsp`, made once per Manager. */
Manager.prototype.socket = function (nsp, opts) {
  var socket = this.nsps[nsp];
  if (!socket) {
    socket = this.nsps[nsp] = new Socket(this, nsp, opts);
  } else if (this.autoConnect && !socket.active) {
    socket.connect();
  }
  return socket;
};

/* A socket closed: with no active socket left, so does the connection. */
Manager.prototype.destroySocket = function () {
  for (var k in this.nsps) if (hasOwn.call(this.nsps, k) && this.nsps[k].active) return;
  this.close();
};

Manager.prototype.packet = function (p) {
  var parts = encode(p), i;
  for (i = 0; i < parts.length; i++) this.engine.send(parts[i]);
};

Manager.prototype.close = Manager.prototype.disconnect = function () {
  var engine = this.engine;
  this.skipReconnect = true;
  this.reconnecting = false;
  clearTimeout(this.timer);
  this.onclose('forced close');
  if (engine) engine.close();
};

Manager.prototype.onclose = function (reason) {
  if (this.engine) this.engine.off();
  this.attempts = 0;
  this.readyState = 'closed';
  this.emit('close', reason);
  if (this._reconnection && !this.skipReconnect) this.reconnect();
};

/* socket.io-client's backoff: delay * 2^attempt, moved by up to ±randomizationFactor of itself,
   capped at reconnectionDelayMax. */
Manager.prototype.backoff = function () {
  var ms = this._reconnectionDelay * Math.pow(2, this.attempts++), rand = Math.random(),
    deviation = Math.floor(rand * this._randomizationFactor * ms);
  ms = (Math.floor(rand * 10) & 1) === 0 ? ms - deviation : ms + deviation;
  return Math.min(ms, this._reconnectionDelayMax) | 0;
};

Manager.prototype.reconnect = function () {
  var self = this;
  if (this.reconnecting || this.skipReconnect) return;
  if (this.attempts >= this._reconnectionAttempts) {
    this.attempts = 0;
    this.emit('reconnect_failed');
    return;
  }
  this.reconnecting = true;
  this.delay = this.backoff();
  this.timer = setTimeout(function () {
    if (self.skipReconnect) return;
    self.emit('reconnect_attempt', self.attempts);
    if (self.skipReconnect) return;
    self.open(function (err) {
      var attempts = self.attempts;
      self.reconnecting = false;
      if (err) {
        self.reconnect();
        self.emit('reconnect_error', err);
      } else {
        self.attempts = 0;
        self.emit('reconnect', attempts);
      }
    });
  }, this.delay);
};
