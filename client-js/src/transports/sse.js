/* `sse`: an EventSource whose events each carry one payload as a JSON string literal. The
   browser would reconnect by itself after a stream ends, to the same URL and after a delay: the
   transport closes it instead and reopens at once, like every other stream. */

function Sse(opts) {
  Stream.call(this, opts);
}
inherit(Sse, Stream);
Sse.prototype.name = 'sse';

Sse.check = function () {
  return !!global.EventSource;
};

Sse.prototype.doStream = function () {
  var self = this, es;
  es = this.es = this.opts.withCredentials && this.opts.xd ?
    new global.EventSource(this.uri('http'), { withCredentials: true }) :
    new global.EventSource(this.uri('http'));
  es.onmessage = function (e) {
    self.onLiteral(e.data);
  };
  es.onerror = function () {
    self.onStreamEnd();
  };
};

Sse.prototype.stopStream = function () {
  var es = this.es;
  if (es) {
    this.es = null;
    es.onmessage = es.onerror = null;
    es.close();
  }
};

transports.sse = Sse;
