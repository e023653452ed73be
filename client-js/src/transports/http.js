/* What every HTTP transport shares: the upstream. Packets go up as one payload per POST on the
   transport's own URL, one POST at a time (the server closes a session whose POSTs overlap),
   by XHR (XDomainRequest for IE8/9 cross-origin) or, where XHR is unusable, by a hidden form
   posted into a hidden iframe. Subclasses provide the downstream: receive(), stopReceive()
   and, while it runs, `polling` or `streaming`. */

function Http(opts) {
  Transport.call(this, opts);
}
inherit(Http, Transport);

Http.prototype.doOpen = function () {
  this.receive();
};

/* A POST of a resumable session that fails without an answer from the server is sent again
   with the same `seq`: the server applies what it had not, once. */
Http.prototype.write = function (packets) {
  var self = this, data = encodePayload(packets), seq = this.seq || 0;
  this.writable = false;
  function send() {
    self.post(data, function (err) {
      if (err && self.resumable && !fatal(err)) return self.retry(send, err);
      if (err) return self.onError(err);
      self.seq = seq + packets.length;
      self.failures = 0;
      self.writable = true;
      self.emit('drain');
    }, seq);
  }
  send();
};

Http.prototype.post = function (data, done, seq) {
  if (this.useForm) formPost(this, data, done, seq);
  else request('POST', this.uri('http', seq), data, this.opts, done);
};

/* The server's refusal (4xx: the session is gone, or the request was wrong), as opposed to a
   network failure worth repeating. */
function fatal(err) {
  return /status 4/.test(err);
}

Http.prototype.doClose = function (graceful) {
  var self = this;
  function bye() {
    self.post('1', function () {
      removeForm(self);
    }, self.seq || 0);
  }
  if (graceful && this.readyState === 'open') {
    if (this.writable) bye();
    else this.once('drain', bye);
  } else {
    removeForm(this);
  }
  // Frees the callback slot (late scripts calling it are harmless).
  if (this.index != null) callbacks[this.index] = noop;
  this.stopReceive();
};

/* Stops receiving once the receiver in flight is done (a poll answered, a POST finished), so
   the engine can hand the session to a WebSocket without losing or overlapping anything. A
   stream keeps flowing: the server ends it with a noop once the upgrade completes. */
Http.prototype.pause = function (onPause) {
  var self = this, waits = 0, token = this.paused = {};
  function one() {
    if (!--waits && self.paused === token) onPause();
  }
  // A resumable stream stops now: the server writes what it did not deliver again on the
  // WebSocket, after the position the upgrade packet names.
  if (this.streaming && this.resumable) this.stopReceive();
  if (this.polling) {
    waits++;
    this.once('pollComplete', one);
  }
  if (!this.writable) {
    waits++;
    this.once('drain', one);
  }
  if (!waits) onPause();
};

/* The upgrade failed after all: go on receiving. */
Http.prototype.resume = function () {
  this.paused = null;
  if (this.readyState === 'open' && !this.polling && !this.streaming) this.receive();
};

function removeForm(t) {
  var form = t.form;
  if (form && form.parentNode) form.parentNode.removeChild(form);
  t.form = t.iframe = null;
}

/* engine.io's hidden-form POST. Form encoding turns LF into CRLF, so newlines travel escaped:
   a literal backslash-n as `\\n`, a real LF as `\n`; the server undoes both. */
function formPost(t, data, done, seq) {
  var form = t.form, area = t.area, id = 'eio_iframe_' + t.index, iframe;
  if (!document.body) {
    return whenBody(function () {
      formPost(t, data, done, seq);
    });
  }

  if (!form) {
    form = t.form = document.createElement('form');
    // A hidden input rather than engine.io's textarea: a rendered textarea lays out the whole
    // payload (hundreds of ms for a large one), a hidden input does not.
    area = t.area = document.createElement('input');
    area.type = 'hidden';
    form.style.position = 'absolute';
    form.style.top = form.style.left = '-1000px';
    form.target = id;
    form.method = 'POST';
    form.setAttribute('accept-charset', 'utf-8');
    area.name = 'd';
    form.appendChild(area);
    document.body.appendChild(form);
  }
  form.action = t.uri('http', seq);

  if (t.iframe) form.removeChild(t.iframe);
  try {
    // IE6/7 ignore a name set after creation: the form would open a new window.
    iframe = document.createElement('<iframe src="javascript:0" name="' + id + '">');
  } catch (e) {
    iframe = document.createElement('iframe');
    iframe.name = id;
  }
  iframe.id = id;
  form.appendChild(iframe);
  t.iframe = iframe;

  area.value = data.replace(/\\n/g, '\\\n').replace(/\n/g, '\\n');
  // Same origin, the answer can be read: anything but `ok` (an error page) failed, which matters
  // where a failed POST can be repeated (resume). Cross-origin it cannot: taken as done.
  function complete() {
    var text = 'ok';
    iframe.onload = iframe.onreadystatechange = noop;
    if (!t.opts.xd && t.resumable) {
      try {
        text = iframe.contentWindow.document.body.innerHTML;
      } catch (e) {
        text = '';
      }
    }
    done(text === 'ok' ? null : 'form post failed');
  }
  try {
    form.submit();
  } catch (e) {}
  if (iframe.attachEvent && !iframe.addEventListener) {
    iframe.onreadystatechange = function () {
      if (iframe.readyState === 'complete') complete();
    };
  } else {
    iframe.onload = complete;
  }
}
