/* The base of every transport (engine.io-client 1.x's Transport). A subclass implements the
   template methods doOpen(), doClose(graceful) and write(packets), and reports through
   onOpen(), onData(payload) / onPacket(packet), onError(message) and onClose(reason). Each
   transport file registers its constructor in `transports` with a static check(opts): the
   feature test that decides whether negotiation tries it at all.

   Events: 'open', 'packet', 'drain' (writable again), 'error' and 'close' (both unexpected:
   the engine's own close() emits nothing). */

var transports = {};

/* Callbacks called by JSONP scripts (`___eio[N]("...")`) and forever frames
   (`var p=parent.___eio[N]`), shared with any other client on the page. */
var callbacks = global.___eio = global.___eio || [];

function Transport(opts) {
  this.opts = opts;
  this.query = extend({}, opts.query);
  this.readyState = '';
  this.writable = false;
}
Emitter(Transport.prototype);

Transport.prototype.open = function () {
  this.readyState = 'opening';
  this.doOpen();
  return this;
};

/* `graceful`: tell the server (HTTP transports post a close packet). */
Transport.prototype.close = function (graceful) {
  if (this.readyState === 'opening' || this.readyState === 'open') {
    this.doClose(graceful);
    this.readyState = 'closed';
  }
  return this;
};

Transport.prototype.send = function (packets) {
  if (this.readyState === 'open') this.write(packets);
};

Transport.prototype.onOpen = function () {
  this.readyState = 'open';
  this.writable = true;
  this.emit('open');
};

Transport.prototype.onData = function (payload) {
  var packets = decodePayload(payload);
  for (var i = 0; i < packets.length && this.readyState !== 'closed'; i++) this.onPacket(packets[i]);
};

Transport.prototype.onPacket = function (packet) {
  var m = packet.type === 'noop' && /^([pe])(\d+)$/.exec(packet.data);
  // HTTP transports are open once the first data (the handshake) arrives.
  if (this.readyState === 'opening') this.onOpen();
  // Halley's resume marker: everything before position m[2] has been read; `e` ends a stream
  // cleanly. Its presence makes the session resumable (other servers send none).
  if (m) {
    this.acked = +m[2];
    this.resumable = true;
    this.ended = m[1] === 'e';
    this.failures = 0;
  }
  this.emit('packet', packet);
  if (packet.type === 'close') this.onClose('transport close');
};

/* Runs `fn` again after a broken request of a resumable session: at once the first time, then
   backing off; gives the transport up (an error) after `max` (6) tries that brought nothing. */
Transport.prototype.retry = function (fn, err, max) {
  var self = this, n = this.failures = (this.failures || 0) + 1;
  if (n > (max || 6)) return this.onError(err);
  this.retryTimer = setTimeout(function () {
    if (self.readyState === 'open') fn();
  }, n > 1 ? Math.min(250 * n, 1500) : 0);
};

Transport.prototype.onError = function (message) {
  if (this.readyState !== 'closed') this.emit('error', new Error(message));
};

Transport.prototype.onClose = function (reason) {
  if (this.readyState === 'closed') return;
  this.doClose(false);
  this.readyState = 'closed';
  this.emit('close', reason);
};

/* The transport's URL: `<scheme>://host:port<path>?EIO=4&transport=NAME&sid=..&j=..&t=..&ack=..`,
   and on a handshake `&tried=name:reason,...`, written as is: the server reads its parameters
   verbatim, and the names and reasons are plain letters and dashes. */
Transport.prototype.uri = function (scheme, seq) {
  var o = this.opts, q = extend(extend({}, this.query), { EIO: 4, transport: this.wire || this.name });
  // What was read so far: on a handshake, the request to resume; `seq` on a POST.
  q.ack = this.acked || 0;
  if (scheme === 'http') q.t = stamp();
  if (seq != null) q.seq = seq;
  return scheme + (o.secure ? 's' : '') + '://' + o.host + ':' + o.port + o.path + '?' + encodeQuery(q) +
    (this.tried && !q.sid ? '&tried=' + this.tried : '');
};
