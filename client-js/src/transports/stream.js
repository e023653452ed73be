/* The streaming transports' receiver: one long GET that delivers payloads as they come. The
   server ends a stream after 128 KiB (so the browser's memory stays flat), after the noop that
   completes an upgrade, or after a close packet; the transport then reopens it with its sid
   unless it is paused or closed. A stream that ends without having delivered anything failed;
   on a resumable session (Halley), one that ends without the `e` marker was cut, and is
   reopened from the position read (Transport.retry).
   Subclasses implement doStream() and stopStream(), and call onChunk(payload) and
   onStreamEnd(). */

function Stream(opts) {
  Http.call(this, opts);
}
inherit(Stream, Http);

Stream.prototype.receive = function () {
  this.streaming = true;
  this.delivered = false;
  this.watch();
  this.doStream();
};

/* A resumable stream whose next ping is late (the server pings every pingInterval; the
   engine sets `ping` = [pingInterval, pingTimeout / 4]) broke without telling: a frame whose
   load event never comes, a proxy that holds the connection. It is reopened from what it read,
   early enough to answer the missed ping before pingTimeout runs out. */
Stream.prototype.watch = function (ping) {
  var self = this, p = this.ping;
  clearTimeout(this.stallTimer);
  if (!this.resumable || !p) return;
  if (ping || !this.due) this.due = now() + p[0] + p[1];
  this.stallTimer = setTimeout(function () {
    // Until a ping says otherwise, a reopened stream is watched more closely.
    self.due = now() + 2 * p[1];
    self.onStreamEnd();
  }, Math.max(this.due - now(), 0));
};

Stream.prototype.onPacket = function (packet) {
  if (packet.type === 'ping') this.watch(true);
  Http.prototype.onPacket.call(this, packet);
};

/* The `e` marker ends the stream: the transport need not wait for the response's end (an
   htmlfile frame's load event may never come). */
Stream.prototype.onChunk = function (payload) {
  if (this.readyState === 'closed' || !this.streaming) return;
  this.delivered = true;
  this.watch();
  this.onData(payload);
  if (this.ended) this.onStreamEnd();
};

/* A payload written as a JSON string literal (sse, xhr-streaming). */
Stream.prototype.onLiteral = function (literal) {
  var payload;
  try {
    payload = json.parse(literal);
  } catch (e) {
    return this.onError('parse error');
  }
  this.onChunk(payload);
};

/* With Halley's resume, a stream that ended without its `e` marker was cut: it reopens from
   what it read (retry), and the server writes the rest again. `err`, where the transport can
   read a status: a refusal (4xx) is not retried. */
Stream.prototype.onStreamEnd = function (err) {
  var self = this, clean = this.ended;
  if (!this.streaming) return;
  this.ended = false;
  this.stopReceive();
  if (this.readyState === 'closed') return;
  if (this.paused) return this.emit('streamEnd');
  if (err && fatal(err)) return this.onError(err);
  if (this.resumable && !clean) {
    return this.retry(function () {
      if (!self.streaming && !self.paused) self.receive();
    }, this.name + ' stream error');
  }
  if (!this.delivered) return this.onError(this.name + ' stream error');
  this.receive();
};

Stream.prototype.stopReceive = function () {
  clearTimeout(this.stallTimer);
  this.streaming = false;
  this.stopStream();
};
