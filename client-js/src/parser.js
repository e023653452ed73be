/* The two codecs, pure. Engine.IO v4: a packet is a type digit and its data; a payload (HTTP
   transports) joins packets with \x1e and writes binary ones as 'b' + base64; WebSocket sends
   binary packets as binary frames. Socket.IO v5:
   <type>[<attachments>-][<namespace>,][<ack id>][<JSON>], binary data replaced by
   {"_placeholder":true,"num":i} and sent as the binary packets that follow. */

var PACKET_TYPES = ['open', 'close', 'ping', 'pong', 'message', 'upgrade', 'noop'];
var SEP = '\x1e';

/* An ArrayBuffer, or a view on one (typed array, DataView): ArrayBuffer.isView is missing in
   IE10. */
function isBinary(o) {
  return hasAB && !!o && (o instanceof ArrayBuffer || (o.buffer instanceof ArrayBuffer && typeof o.byteLength === 'number'));
}

/* A view as an ArrayBuffer of exactly its bytes (typed arrays have no slice in IE10/11). */
function toBuffer(o) {
  if (o instanceof ArrayBuffer) return o;
  var copy = new Uint8Array(o.byteLength);
  copy.set(new Uint8Array(o.buffer, o.byteOffset, o.byteLength));
  return copy.buffer;
}

/* `text`: for an HTTP payload (binary as base64), else for a WebSocket frame. */
function encodePacket(p, text) {
  if (isBinary(p.data)) return text ? 'b' + b64encode(toBuffer(p.data)) : toBuffer(p.data);
  return indexOf(PACKET_TYPES, p.type) + (p.data == null ? '' : p.data);
}

function decodePacket(data) {
  var type;
  if (typeof data !== 'string') return { type: 'message', data: data };
  if (data.charAt(0) === 'b') return { type: 'message', data: b64decode(data.slice(1)) };
  type = PACKET_TYPES[data.charAt(0)];
  return type ? { type: type, data: data.slice(1) } : { type: 'error', data: 'parser error' };
}

function encodePayload(packets) {
  var out = [];
  for (var i = 0; i < packets.length; i++) out.push(encodePacket(packets[i], true));
  return out.join(SEP);
}

function decodePayload(payload) {
  var parts = payload.split(SEP), out = [];
  for (var i = 0; i < parts.length; i++) out.push(decodePacket(parts[i]));
  return out;
}

/* Socket.IO packet types. */
var CONNECT = 0, DISCONNECT = 1, EVENT = 2, ACK = 3, CONNECT_ERROR = 4, BINARY_EVENT = 5, BINARY_ACK = 6;

function hasBinary(o) {
  var k;
  if (!o || typeof o !== 'object') return false;
  if (isBinary(o)) return true;
  if (typeof o.toJSON === 'function' && !isArray(o)) return hasBinary(o.toJSON());
  for (k in o) if (hasOwn.call(o, k) && hasBinary(o[k])) return true;
  return false;
}

/* A copy of `o` with binary replaced by placeholders, the binary pushed onto `buffers`. */
function deconstruct(o, buffers) {
  var out, k;
  if (isBinary(o)) {
    buffers.push(o);
    return { _placeholder: true, num: buffers.length - 1 };
  }
  if (!o || typeof o !== 'object') return o;
  if (typeof o.toJSON === 'function' && !isArray(o)) return o;
  out = isArray(o) ? [] : {};
  for (k in o) if (hasOwn.call(o, k)) out[k] = deconstruct(o[k], buffers);
  return out;
}

function reconstruct(o, buffers) {
  var k;
  if (!o || typeof o !== 'object') return o;
  if (o._placeholder === true) {
    if (typeof o.num === 'number' && o.num >= 0 && o.num < buffers.length) return buffers[o.num];
    throw new Error('illegal attachment');
  }
  for (k in o) if (hasOwn.call(o, k)) o[k] = reconstruct(o[k], buffers);
  return o;
}

/* A packet {type, nsp, id, data} as the Engine.IO messages that carry it. */
function encode(p) {
  var buffers = [], data = p.data, type = p.type, s;
  if ((type === EVENT || type === ACK) && hasBinary(data)) {
    data = deconstruct(data, buffers);
    type += 3;
  }
  s = '' + type;
  if (buffers.length) s += buffers.length + '-';
  if (p.nsp && p.nsp !== '/') s += p.nsp + ',';
  if (p.id != null) s += p.id;
  if (data !== void 0) s += json.stringify(data);
  buffers.unshift(s);
  return buffers;
}

var SIO_RE = /^([0-6])(?:(\d+)-)?(?:(\/[^,]*),?)?(\d*)([\s\S]*)$/;

function decodeString(s) {
  var m = SIO_RE.exec(s), p, d;
  if (!m) throw new Error('invalid packet');
  p = { type: +m[1], nsp: m[3] || '/' };
  if ((p.type === BINARY_EVENT || p.type === BINARY_ACK) !== !!m[2]) throw new Error('illegal attachments');
  if (m[2]) p.attachments = +m[2];
  if (m[4]) p.id = +m[4];
  if (m[5]) p.data = json.parse(m[5]);
  d = p.data;
  switch (p.type) {
    case CONNECT: if (d === void 0 || typeof d === 'object') return p; break;
    case DISCONNECT: if (d === void 0) return p; break;
    case CONNECT_ERROR: if (typeof d === 'string' || typeof d === 'object') return p; break;
    case EVENT: case BINARY_EVENT:
      if (isArray(d) && (typeof d[0] === 'string' || typeof d[0] === 'number')) return p;
      break;
    default: if (isArray(d)) return p;
  }
  throw new Error('invalid payload');
}

/* Reassembles packets from Engine.IO messages, calling `onPacket` with each whole one.
   Throws on anything malformed: the caller closes the connection. */
function Decoder(onPacket) {
  this.onPacket = onPacket;
  this.pending = null;
}

Decoder.prototype.add = function (data) {
  var p = this.pending;
  if (typeof data === 'string') {
    if (p) throw new Error('text while reconstructing a packet');
    p = decodeString(data);
    if (p.attachments) {
      p.buffers = [];
      this.pending = p;
    } else {
      this.onPacket(p);
    }
  } else {
    if (!p) throw new Error('binary without a packet');
    p.buffers.push(data);
    if (p.buffers.length === p.attachments) {
      this.pending = null;
      p.data = reconstruct(p.data, p.buffers);
      delete p.buffers;
      this.onPacket(p);
    }
  }
};
