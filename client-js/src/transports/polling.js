/* `polling`: XHR long-polling. One GET at a time waits for the server's next payload; the
   next one starts as soon as it is answered. */

function Polling(opts) {
  Http.call(this, opts);
}
inherit(Polling, Http);
Polling.prototype.name = 'polling';

/* Same-origin XHR, XHR2 CORS, or XDomainRequest (IE8/9; same scheme only). */
Polling.check = function (o) {
  if (!o.xd) return !!newXhr();
  return xhr2() || (!!global.XDomainRequest && o.sameScheme);
};

Polling.prototype.receive = function () {
  this.polling = true;
  this.doPoll();
};

Polling.prototype.doPoll = function () {
  var self = this;
  this.req = request('GET', this.uri('http'), null, this.opts, function (err, text) {
    self.req = null;
    self.onPoll(err, text);
  });
};

/* A poll of a resumable session that breaks is sent again (its `ack` unchanged, so the server
   answers the same frames), unless an upgrade waits for it: then the WebSocket gets them. */
Polling.prototype.onPoll = function (err, payload) {
  var self = this;
  if (err && this.resumable && !fatal(err)) {
    this.polling = false;
    if (this.paused) return this.emit('pollComplete');
    return this.retry(function () {
      if (!self.polling && !self.paused) self.receive();
    }, err);
  }
  if (err) return this.onError(err);
  this.onData(payload);
  this.polling = false;
  this.emit('pollComplete');
  if (this.readyState === 'open' && !this.paused) this.receive();
};

Polling.prototype.stopReceive = function () {
  if (this.req) this.req.abort();
  this.req = null;
  this.polling = false;
};

transports.polling = Polling;
