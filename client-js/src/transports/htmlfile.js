/* `htmlfile`: the forever frame of old IE, hosted in an `ActiveXObject("htmlfile")` document
   rather than the page, so that IE shows no busy cursor and no "loading" for as long as the
   stream lasts. The frame's `parent` is that document's window, which gets the page's
   `___eio`. Everything else is the iframe transport. */

function Htmlfile(opts) {
  Iframe.call(this, opts);
}
inherit(Htmlfile, Iframe);
Htmlfile.prototype.name = 'htmlfile';

function newHtmlfile() {
  var doc = new global.ActiveXObject('htmlfile'), domain = pageDomain();
  doc.open();
  // The frame inside reaches this document's window: both relax their domain as the page did.
  doc.write('<html><body>' + (domain ? '<script>document.domain="' + domain + '"</script>' : '') + '</body></html>');
  doc.close();
  return doc;
}

Htmlfile.check = function (o) {
  try {
    return !o.xd && !!newHtmlfile();
  } catch (e) {
    return false;
  }
};

Htmlfile.prototype.host = function () {
  if (!this.doc) {
    this.doc = newHtmlfile();
    this.doc.parentWindow.___eio = callbacks;
  }
  return this.doc;
};

Htmlfile.prototype.doClose = function (graceful) {
  Iframe.prototype.doClose.call(this, graceful);
  this.doc = null;
  // IE keeps the ActiveX document (and its connection) until a collection.
  if (global.CollectGarbage) global.CollectGarbage();
};

transports.htmlfile = Htmlfile;
