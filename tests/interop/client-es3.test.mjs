// The served browser client is ECMAScript 3, so that IE6-8 parse it: `es-check es3` (pinned at
// 8.0.2, the last version whose es3 check really parses as ES3: 9.x treats es3 as ES5), then
// what ES3 allows but old IE's JScript does not take, or what needs ES5 at run time.
//
// Build first: cargo build --release --examples. Run: node --test client-es3.test.mjs

import { test, before } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";

import * as acorn from "acorn";

import { fetchServedClient } from "./client-script.mjs";

let served;

before(async () => {
  served = await fetchServedClient();
});

test("both URLs serve the same script, defining only the global io", () => {
  assert.equal(served.halley, served.script);
  const ast = acorn.parse(served.script, { ecmaVersion: 3 });
  assert.equal(ast.body.length, 1, "one statement: the wrapping function call");
  const globals = served.script.match(/\bglobal\.([A-Za-z_$]+)\s*=[^=]/g).map((m) => m.split(/[.\s=]/)[1]);
  assert.deepEqual([...new Set(globals)].sort(), ["___eio", "io"]);
});

test("es-check es3 accepts the served script", async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), "halley-es3-"));
  try {
    const file = path.join(dir, "socket.io.js");
    await writeFile(file, served.script);
    const bin = createRequire(import.meta.url).resolve("es-check/index.js");
    const run = spawnSync(process.execPath, [bin, "es3", file], { encoding: "utf8" });
    assert.equal(run.status, 0, `es-check failed:\n${run.stdout}\n${run.stderr}`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("no reserved word as a property name, no trailing comma (old JScript)", () => {
  // IE<9 rejects `a.default`, `{class: 1}`: acorn's "never" mode does too.
  acorn.parse(served.script, { ecmaVersion: 3, allowReserved: "never" });
  // `[1, 2,]` has length 3 in IE<9; `{a: 1,}` is an error.
  const tokens = [...acorn.tokenizer(served.script, { ecmaVersion: 3 })];
  for (let i = 1; i < tokens.length; i++) {
    const closes = tokens[i].type === acorn.tokTypes.bracketR || tokens[i].type === acorn.tokTypes.braceR;
    if (closes && tokens[i - 1].type === acorn.tokTypes.comma) {
      assert.fail(`trailing comma at ${acorn.getLineInfo(served.script, tokens[i].start).line}`);
    }
  }
});

// ES5 library functions old IE lacks: methods on any object, and statics of the builtins.
const ES5_METHODS = new Set(["forEach", "map", "filter", "reduce", "reduceRight", "some", "every", "bind", "trim", "toISOString"]);
const ES5_STATICS = {
  Object: ["keys", "create", "defineProperty", "defineProperties", "getPrototypeOf", "getOwnPropertyNames", "freeze"],
  Array: ["isArray", "from", "of"],
  Date: ["now"],
};

test("no ES5 library calls, no bare JSON, no named function expressions", () => {
  const problems = [];
  const line = (node) => acorn.getLineInfo(served.script, node.start).line;
  (function walk(node) {
    if (!node || typeof node.type !== "string") return;
    if (node.type === "MemberExpression" && !node.computed) {
      const name = node.property.name;
      if (ES5_METHODS.has(name)) problems.push(`.${name} at line ${line(node)}`);
      if (node.object.type === "Identifier" && ES5_STATICS[node.object.name]?.includes(name)) {
        problems.push(`${node.object.name}.${name} at line ${line(node)}`);
      }
      return walk(node.object);
    }
    // JSON exists from IE8 on only: reach it as global.JSON, with the fallback.
    if (node.type === "Identifier" && node.name === "JSON") problems.push(`JSON at line ${line(node)}`);
    // JScript binds a named function expression's name in the enclosing scope, as a second function.
    if (node.type === "FunctionExpression" && node.id) problems.push(`named function expression at line ${line(node)}`);
    for (const key of Object.keys(node)) {
      const child = node[key];
      if (Array.isArray(child)) child.forEach(walk);
      else if (child && typeof child === "object") walk(child);
    }
  })(acorn.parse(served.script, { ecmaVersion: 3 }));
  assert.deepEqual(problems, []);
});
