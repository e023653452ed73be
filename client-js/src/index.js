/* The one global: io(url, opts), io.connect (the same, for Socket.IO 0.9 pages such as
   `io.connect('/')`), and the classes. The URL's path is the namespace; the Engine.IO path is
   opts.path ('/socket.io/'). Sockets of one server share a cached Manager unless opts.forceNew,
   opts.multiplex === false, or the namespace is already in use on it. */

var managers = {};

function lookup(uri, opts) {
  var u, key, io, nsp;
  if (uri && typeof uri === 'object') {
    opts = uri;
    uri = null;
  }
  opts = normalize(opts || {});
  u = parseUrl(absolute(uri));
  nsp = u.path || '/';
  if (u.query && !opts.query) opts.query = u.query;
  key = u.protocol + '://' + u.host + ':' + u.port + (opts.path || '');
  if (opts.forceNew || opts.multiplex === false || (managers[key] && managers[key].nsps[nsp])) {
    io = new Manager(uri, opts);
  } else {
    io = managers[key] || (managers[key] = new Manager(uri, opts));
  }
  return io.socket(nsp, opts);
}

extend(lookup, {
  connect: lookup,
  Manager: Manager,
  Socket: Socket,
  Engine: Engine,
  transports: transports,
  protocol: 5
});

global.io = lookup;
