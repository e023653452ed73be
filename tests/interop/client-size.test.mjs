// Size of the served browser client: minified with terser (pinned, ie8-safe output) and
// gzipped with zlib at level 9, printed, and kept under 13 KB gzipped. The minified script
// must still be ES3 (terser's ie8 mode quotes ES5 keywords as properties; ES3's other reserved
// words, such as `volatile`, need `properties: false`).
//
// Build first: cargo build --release --examples. Run: node --test client-size.test.mjs

import { test } from "node:test";
import assert from "node:assert/strict";
import { gzipSync } from "node:zlib";

import * as acorn from "acorn";
import { minify } from "terser";

import { fetchServedClient } from "./client-script.mjs";

// The budget of issue #19: 13 KB (decimal, the stricter reading).
const LIMIT = 13_000;

test("minified and gzipped, the client stays under 13 KB", async (t) => {
  const { script } = await fetchServedClient();
  const { code } = await minify(script, {
    ie8: true,
    // `x["volatile"]` stays bracketed: ES5 allows `x.volatile`, ES3 does not.
    compress: { passes: 2, properties: false },
    mangle: true,
    format: { ascii_only: true },
  });
  const gzip = (s) => gzipSync(Buffer.from(s), { level: 9 }).length;
  const sizes = {
    source: Buffer.byteLength(script),
    sourceGzip: gzip(script),
    minified: Buffer.byteLength(code),
    minifiedGzip: gzip(code),
  };
  t.diagnostic(
    `client size: source ${sizes.source} B (gzip ${sizes.sourceGzip} B), ` +
      `minified ${sizes.minified} B (gzip ${sizes.minifiedGzip} B), limit ${LIMIT} B gzipped`,
  );
  acorn.parse(code, { ecmaVersion: 3, allowReserved: "never" });
  assert.ok(sizes.minifiedGzip < LIMIT, `${sizes.minifiedGzip} B gzipped`);
});
