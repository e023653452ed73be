/* Halley client: Socket.IO v5 / Engine.IO v4 for every browser, IE6 to today's. ES3 only. */
(function (global) {
