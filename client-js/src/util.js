/* Small helpers for the rest of the client. ES3 only: no Array extras, no Object.keys, no
   Function.prototype.bind, no Date.now; everything here works back to IE6. */

var document = global.document;
var hasOwn = Object.prototype.hasOwnProperty;
var hasAB = typeof ArrayBuffer === 'function' || typeof ArrayBuffer === 'object';
function noop() {}

function isArray(o) {
  return Object.prototype.toString.call(o) === '[object Array]';
}

function indexOf(arr, x) {
  for (var i = 0; i < arr.length; i++) if (arr[i] === x) return i;
  return -1;
}

function extend(to, from) {
  for (var k in from) if (hasOwn.call(from, k)) to[k] = from[k];
  return to;
}

function inherit(Child, Parent) {
  function F() {}
  F.prototype = Parent.prototype;
  Child.prototype = new F();
  Child.prototype.constructor = Child;
}

function slice(args, from) {
  return Array.prototype.slice.call(args, from || 0);
}

function now() {
  return new Date().getTime();
}

/* DOM events, with IE<9's attachEvent; `off` detaches (IE leaks what stays attached). */
function listen(el, ev, fn, off) {
  if (el.addEventListener) el[off ? 'removeEventListener' : 'addEventListener'](ev, fn, false);
  else if (el.attachEvent) el[off ? 'detachEvent' : 'attachEvent']('on' + ev, fn);
}

/* Runs `fn` once the page has a body: old IE aborts the page ("Operation aborted") when
   elements are appended to one still being parsed, or to none. */
function whenBody(fn) {
  if (document.body) fn();
  else setTimeout(function () {
    whenBody(fn);
  }, 20);
}

/* The page's relaxed document.domain, if it set one: forever frames must set the same. */
function pageDomain() {
  var loc = global.location;
  return document && loc && document.domain !== loc.hostname ? document.domain : null;
}

function encodeQuery(obj) {
  var s = '';
  for (var k in obj) {
    if (hasOwn.call(obj, k) && obj[k] != null) {
      s += (s ? '&' : '') + encodeURIComponent(k) + '=' + encodeURIComponent(obj[k]);
    }
  }
  return s;
}

/* `a=1&b=x=y` → {a: '1', b: 'x=y'}: a value keeps its own `=`. */
function decodeQuery(qs) {
  var out = {}, pairs = qs.split('&'), i, kv, eq;
  for (i = 0; i < pairs.length; i++) {
    if (!(kv = pairs[i])) continue;
    eq = kv.indexOf('=');
    if (eq < 0) eq = kv.length;
    out[decodeURIComponent(kv.slice(0, eq))] = decodeURIComponent(kv.slice(eq + 1));
  }
  return out;
}

/* A cache-buster for every HTTP request: IE caches XHR GETs whatever the headers say. */
var ticks = 0;
function stamp() {
  return now().toString(36) + (ticks++).toString(36);
}

/* scheme, host (IPv6 kept in brackets), port, path, query. IE<9 gives '' for groups that did
   not match, others undefined: hence the `|| ''`. */
var URL_RE = /^(?:([a-z][a-z0-9+.\-]*):)?(?:\/\/(\[[^\]]*\]|[^\/?#:]*)(?::(\d*))?)?([^?#]*)(?:\?([^#]*))?/i;
function parseUrl(s) {
  var m = URL_RE.exec(s) || [];
  return {
    protocol: (m[1] || '').toLowerCase(),
    host: m[2] || '',
    port: m[3] || '',
    path: m[4] || '',
    query: m[5] || ''
  };
}

/* An XMLHttpRequest, or old IE's ActiveX one (IE6, or IE7+ with native XHR disabled). */
function newXhr() {
  try {
    if (global.XMLHttpRequest) return new global.XMLHttpRequest();
  } catch (e) {}
  try {
    return new global.ActiveXObject('Microsoft.XMLHTTP');
  } catch (e) {}
  return null;
}

/* Whether XHR can read cross-origin responses and stream (XMLHttpRequest level 2). */
function xhr2() {
  try {
    return 'withCredentials' in newXhr();
  } catch (e) {
    return false; // no XHR at all, or IE6's ActiveX one, which `in` may not take
  }
}

/* base64 of binary attachments on the HTTP transports (`b<base64>` packets). */
var B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';

function b64encode(buf) {
  var b = new Uint8Array(buf), n = b.length, s = '', i, c;
  for (i = 0; i < n; i += 3) {
    c = (b[i] << 16) | ((i + 1 < n ? b[i + 1] : 0) << 8) | (i + 2 < n ? b[i + 2] : 0);
    s += B64.charAt(c >> 18 & 63) + B64.charAt(c >> 12 & 63) +
      (i + 1 < n ? B64.charAt(c >> 6 & 63) : '=') + (i + 2 < n ? B64.charAt(c & 63) : '=');
  }
  return s;
}

/* Without ArrayBuffer (IE6-9) binary data stays base64, as engine.io-client 1.x left it. */
function b64decode(s) {
  if (!hasAB) return { base64: true, data: s };
  s = s.replace(/[^A-Za-z0-9+\/]/g, '');
  var n = s.length, out = new Uint8Array(n * 3 >> 2), i, j = 0, c = 0, bits = 0;
  for (i = 0; i < n; i++) {
    c = (c << 6) | B64.indexOf(s.charAt(i));
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[j++] = c >> bits & 255;
      c &= (1 << bits) - 1;
    }
  }
  return out.buffer;
}

/* rememberTransport: localStorage, else a cookie (IE6/7), one entry per server
   (`halley-transport.<host>.<port>`, the value `name|saved at`), forgotten after a day: the
   network a laptop is on changes. */
var PREF_TTL = 864e5;
function prefKey(o) {
  return 'halley-transport.' + o.host.replace(/[^\w.-]/g, '_') + '.' + o.port;
}
function loadPref(o) {
  var key = prefKey(o), v, m;
  try {
    v = global.localStorage && global.localStorage.getItem(key);
  } catch (e) {}
  if (v == null && document) {
    m = new RegExp('(?:^|;)\\s*' + key.replace(/\./g, '\\.') + '=([^;]*)').exec(document.cookie);
    v = m && decodeURIComponent(m[1]);
  }
  m = v && /^([\w-]+)\|(\d+)$/.exec(v);
  return m && now() - m[2] < PREF_TTL ? m[1] : null;
}
function savePref(o, name) {
  var key = prefKey(o), v = name + '|' + now();
  try {
    if (global.localStorage) return global.localStorage.setItem(key, v);
  } catch (e) {}
  // `expires`, not max-age, which IE6-8 ignore.
  if (document) document.cookie = key + '=' + encodeURIComponent(v) + ';path=/;expires=' + new Date(now() + PREF_TTL).toUTCString();
}
