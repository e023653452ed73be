/* One HTTP request: XMLHttpRequest (or old IE's ActiveX one), or XDomainRequest for IE8/9
   cross-origin. `done(err, text)` is called once, never after abort(); `progress(text)`, if
   given, sees the response text as it grows (the streaming transports). */

function request(method, url, data, opts, done, progress) {
  var xdr = opts.xd && !xhr2() && global.XDomainRequest, x, finished = false;

  function end(err, text) {
    if (finished) return;
    finished = true;
    cleanup();
    done(err, text);
  }
  function cleanup() {
    // IE6 throws on assigning null to these handlers, and on assigning the XHR2 ones at all to
    // its ActiveX XHR: a no-op function, and a try.
    try {
      x.onreadystatechange = noop;
      x.onload = x.onerror = x.onprogress = x.ontimeout = noop;
    } catch (e) {}
  }
  function grow() {
    if (progress && !finished) {
      var text;
      try {
        text = x.responseText; // IE<10 throws before readyState 4
      } catch (e) {
        return;
      }
      if (text) progress(text);
    }
  }

  try {
    if (xdr) {
      x = new xdr();
      x.onload = function () {
        grow();
        end(null, x.responseText);
      };
      x.onerror = x.ontimeout = function () {
        end('xdr error');
      };
      // IE9 aborts XDR requests that have no progress handler.
      x.onprogress = grow;
      x.open(method, url);
    } else {
      x = newXhr();
      x.open(method, url, true);
      if (opts.withCredentials && opts.xd) x.withCredentials = true;
      if (data != null) x.setRequestHeader('Content-Type', 'text/plain;charset=UTF-8');
      if (progress && 'onprogress' in x) x.onprogress = grow;
      x.onreadystatechange = function () {
        var status;
        if (x.readyState === 3) grow();
        if (x.readyState !== 4) return;
        try {
          status = x.status;
        } catch (e) {
          status = 0;
        }
        if (status === 200) {
          grow();
          end(null, x.responseText);
        } else {
          // Let onerror-style failures (status 0) settle first, as engine.io-client does.
          setTimeout(function () {
            end('xhr status ' + status);
          }, 0);
        }
      };
    }
    x.send(data == null ? null : data);
  } catch (e) {
    setTimeout(function () {
      end('xhr failed: ' + e.message);
    }, 0);
  }

  return {
    abort: function () {
      if (finished) return;
      finished = true;
      cleanup();
      try {
        x.abort();
      } catch (e) {}
    }
  };
}
