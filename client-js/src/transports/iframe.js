/* `iframe`: the forever frame. A hidden iframe loads one long HTML response whose first script
   binds `var p=parent.___eio[N]`, then calls `p("<payload>")` in a script per flush; the frame's
   load event marks the end of the stream. Same-origin only (the frame reaches into its parent).
   Upstream is an XHR POST, or the hidden form where XHR is unusable. The DOM the frame
   accumulates is bounded by the server's stream limit. */

function Iframe(opts) {
  var self = this;
  Stream.call(this, opts);
  this.index = callbacks.length;
  callbacks.push(function (payload) {
    self.onChunk(payload);
  });
  this.query.j = this.index;
  this.useForm = !newXhr();
}
inherit(Iframe, Stream);
Iframe.prototype.name = 'iframe';

Iframe.check = function (o) {
  return !o.xd && !!document;
};

/* The document that hosts the frame. */
Iframe.prototype.host = function () {
  return document;
};

Iframe.prototype.doStream = function () {
  var self = this, doc = this.host(), frame = doc.createElement('iframe'), s = frame.style;
  this.end = function () {
    if (self.frame === frame) self.onStreamEnd();
  };
  s.position = 'absolute';
  s.width = s.height = '1px';
  s.left = s.top = '-9999px';
  s.border = '0';
  listen(frame, 'load', this.end);
  // A page that relaxed document.domain: the frame sets the same, or it cannot reach us.
  this.query.domain = pageDomain();
  frame.src = this.uri('http');
  this.frame = frame;
  if (doc !== document) return doc.body.appendChild(frame);
  whenBody(function () {
    if (self.frame === frame) document.body.appendChild(frame);
  });
};

Iframe.prototype.stopStream = function () {
  var frame = this.frame;
  if (frame) {
    this.frame = null;
    listen(frame, 'load', this.end, true);
    // Removing the frame aborts its request.
    if (frame.parentNode) frame.parentNode.removeChild(frame);
  }
};

transports.iframe = Iframe;
