/* `jsonp`: long-polling through script tags, for browsers that can read nothing cross-origin
   (IE6/7) or have no usable XHR. On the wire it is `polling` with `j=N`: each GET answers
   `___eio[N]("<payload>");`. Upstream is a hidden-form POST (formPost). */

function Jsonp(opts) {
  var self = this;
  Polling.call(this, opts);
  this.index = callbacks.length;
  callbacks.push(function (payload) {
    self.onScript(payload);
  });
  this.query.j = this.index;
  this.useForm = true;
}
inherit(Jsonp, Polling);
Jsonp.prototype.name = 'jsonp';
Jsonp.prototype.wire = 'polling';

Jsonp.check = function () {
  return !!document;
};

Jsonp.prototype.doPoll = function () {
  var self = this, script = document.createElement('script'), first;
  function fail() {
    if (self.script !== script) return;
    self.removeScript();
    self.onPoll('jsonp poll error');
  }
  this.removeScript();
  script.async = true;
  script.charset = 'UTF-8';
  script.src = this.uri('http');
  script.onerror = fail;
  // IE6–8 have no script error event: a script that reached `loaded` without calling back
  // failed (a successful one calls back while it runs, before that).
  script.onreadystatechange = function () {
    if (/loaded|complete/.test(script.readyState)) setTimeout(fail, 0);
  };
  first = document.getElementsByTagName('script')[0];
  if (first) first.parentNode.insertBefore(script, first);
  else (document.head || document.documentElement).appendChild(script);
  this.script = script;
};

Jsonp.prototype.onScript = function (payload) {
  if (!this.script) return;
  this.removeScript();
  this.onPoll(null, payload);
};

Jsonp.prototype.removeScript = function () {
  var script = this.script;
  if (script) {
    this.script = null;
    script.onerror = script.onreadystatechange = null;
    if (script.parentNode) script.parentNode.removeChild(script);
  }
};

Jsonp.prototype.stopReceive = function () {
  this.removeScript();
  this.polling = false;
};

transports.jsonp = Jsonp;
