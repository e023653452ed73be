/* Events, component-emitter style, mixed into Engine, Transport, Manager and Socket. Listener
   lists are keyed '$' + name so that names like 'constructor' cannot clash with Object's. */

function Emitter(obj) {
  return extend(obj, Emitter.prototype);
}

Emitter.prototype.on = Emitter.prototype.addEventListener = function (ev, fn) {
  var cbs = this._cbs || (this._cbs = {});
  (cbs['$' + ev] || (cbs['$' + ev] = [])).push(fn);
  return this;
};

Emitter.prototype.once = function (ev, fn) {
  var self = this;
  function on() {
    self.off(ev, on);
    fn.apply(self, arguments);
  }
  on.fn = fn;
  return this.on(ev, on);
};

/* off(): every listener; off(ev): every listener of ev; off(ev, fn): that one. */
Emitter.prototype.off = Emitter.prototype.removeListener = Emitter.prototype.removeAllListeners =
Emitter.prototype.removeEventListener = function (ev, fn) {
  var list, i;
  if (!arguments.length) {
    this._cbs = {};
  } else if ((list = this._cbs && this._cbs['$' + ev])) {
    if (arguments.length === 1) {
      delete this._cbs['$' + ev];
    } else {
      for (i = 0; i < list.length; i++) {
        if (list[i] === fn || list[i].fn === fn) {
          list.splice(i, 1);
          break;
        }
      }
    }
  }
  return this;
};

Emitter.prototype.emit = function (ev) {
  var list = this._cbs && this._cbs['$' + ev], args, i;
  if (list) {
    list = list.slice(0);
    args = slice(arguments, 1);
    for (i = 0; i < list.length; i++) list[i].apply(this, args);
  }
  return this;
};

Emitter.prototype.listeners = function (ev) {
  return ((this._cbs && this._cbs['$' + ev]) || []).slice(0);
};

Emitter.prototype.hasListeners = function (ev) {
  return !!this.listeners(ev).length;
};
