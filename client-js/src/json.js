/* JSON for browsers without it (IE6, IE7, IE8 in quirks mode): a strict parser that never
   evaluates anything, and a stringify for plain data. Native JSON is used when present. */

var JSON_ESC = { '"': '\\"', '\\': '\\\\', '\b': '\\b', '\f': '\\f', '\n': '\\n', '\r': '\\r', '\t': '\\t' };
var JSON_UNESC = { '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' };

function quote(s) {
  return '"' + s.replace(/[\\"\u0000-\u001f\u2028\u2029]/g, function (c) {
    return JSON_ESC[c] || '\\u' + ('000' + c.charCodeAt(0).toString(16)).slice(-4);
  }) + '"';
}

/* Returns null for what JSON cannot represent (functions, undefined). */
function stringify(v) {
  var out = [], i, k, s;
  if (v && typeof v.toJSON === 'function') v = v.toJSON();
  switch (typeof v) {
    case 'string': return quote(v);
    case 'number': return isFinite(v) ? String(v) : 'null';
    case 'boolean': return String(v);
    case 'object':
      if (v === null) return 'null';
      if (isArray(v)) {
        for (i = 0; i < v.length; i++) {
          s = stringify(v[i]);
          out.push(s === null ? 'null' : s);
        }
        return '[' + out.join(',') + ']';
      }
      for (k in v) {
        if (hasOwn.call(v, k) && (s = stringify(v[k])) !== null) out.push(quote(k) + ':' + s);
      }
      return '{' + out.join(',') + '}';
  }
  return null;
}

var JSON_NUM = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+\-]?\d+)?/g;

function parse(text) {
  text = String(text);
  var i = 0, n = text.length;

  function fail() {
    throw new SyntaxError('JSON.parse: bad input at ' + i);
  }
  function ws() {
    var c;
    while (i < n && ((c = text.charAt(i)) === ' ' || c === '\t' || c === '\n' || c === '\r')) i++;
  }
  function str() {
    var out = '', start = ++i, c, h;
    for (;;) {
      c = text.charAt(i);
      if (c === '"') {
        i++;
        return out + text.slice(start, i - 1);
      }
      if (c === '\\') {
        out += text.slice(start, i);
        c = text.charAt(++i);
        if (c === 'u') {
          h = text.substr(i + 1, 4);
          if (!/^[0-9a-fA-F]{4}$/.test(h)) fail();
          out += String.fromCharCode(parseInt(h, 16));
          i += 5;
        } else {
          if (!hasOwn.call(JSON_UNESC, c)) fail();
          out += JSON_UNESC[c];
          i++;
        }
        start = i;
      } else if (c === '' || c < ' ') {
        fail();
      } else {
        i++;
      }
    }
  }
  function value() {
    var c, o, m, w;
    ws();
    c = text.charAt(i);
    if (c === '{') {
      o = {};
      i++;
      ws();
      if (text.charAt(i) === '}') {
        i++;
        return o;
      }
      for (;;) {
        ws();
        if (text.charAt(i) !== '"') fail();
        m = str();
        ws();
        if (text.charAt(i++) !== ':') fail();
        o[m] = value();
        ws();
        c = text.charAt(i++);
        if (c === '}') return o;
        if (c !== ',') fail();
      }
    }
    if (c === '[') {
      o = [];
      i++;
      ws();
      if (text.charAt(i) === ']') {
        i++;
        return o;
      }
      for (;;) {
        o.push(value());
        ws();
        c = text.charAt(i++);
        if (c === ']') return o;
        if (c !== ',') fail();
      }
    }
    if (c === '"') return str();
    if (c === '-' || (c >= '0' && c <= '9')) {
      JSON_NUM.lastIndex = i;
      m = JSON_NUM.exec(text);
      if (!m || m.index !== i) fail();
      i += m[0].length;
      return +m[0];
    }
    for (w in JSON_WORDS) {
      if (hasOwn.call(JSON_WORDS, w) && text.substr(i, w.length) === w) {
        i += w.length;
        return JSON_WORDS[w];
      }
    }
    fail();
  }

  var v = value();
  ws();
  if (i < n) fail();
  return v;
}

var JSON_WORDS = { 'true': true, 'false': false, 'null': null };

var json = global.JSON && global.JSON.parse ? global.JSON : { parse: parse, stringify: stringify };
