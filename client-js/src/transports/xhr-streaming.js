/* `xhr-streaming`: one XHR GET read while it loads (readyState 3 / progress). The response is
   2 KiB of spaces and a newline (proxies and old browsers hold back the first bytes), then one
   JSON string literal of a payload per line. */

function XhrStreaming(opts) {
  Stream.call(this, opts);
}
inherit(XhrStreaming, Stream);
XhrStreaming.prototype.name = 'xhr-streaming';

/* XHR2, which reads partial responses and cross-origin ones; else a same-origin native XHR
   outside IE, whose XHR shows no text before the response completes. */
XhrStreaming.check = function (o) {
  return xhr2() || (!o.xd && !!global.XMLHttpRequest && !('ActiveXObject' in global));
};

XhrStreaming.prototype.doStream = function () {
  var self = this, pos = 0;
  function feed(text) {
    var nl, line;
    while (self.streaming && (nl = text.indexOf('\n', pos)) >= 0) {
      line = text.slice(pos, nl);
      pos = nl + 1;
      if (line.charAt(0) === '"') self.onLiteral(line);
    }
  }
  this.req = request('GET', this.uri('http'), null, this.opts, function (err, text) {
    if (!err) feed(text);
    self.onStreamEnd(err);
  }, feed);
};

XhrStreaming.prototype.stopStream = function () {
  if (this.req) this.req.abort();
  this.req = null;
};

transports['xhr-streaming'] = XhrStreaming;
