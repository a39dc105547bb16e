// TypeScript cells as JavaScript, with amaro (Node.js's own type stripper: swc in WebAssembly). No type checking,
// as in E2B's TypeScript kernel: a type error is not an error.
//
// Types are blanked out in place first ("strip-only"), so every position, and with it the line and column of
// any error, stays the user's own. Only a cell that needs code generated (an enum, a namespace, parameter
// properties, `import x = require()`) is transformed, and its lines are then amaro's.
"use strict";

const path = require("path");

const AMARO = process.env.SANDCELL_AMARO || "amaro";
let amaro = load();

// A fresh copy of amaro, with a WebAssembly instance of its own.
function load() {
  const directory = path.dirname(require.resolve(path.join(AMARO, "package.json")));
  for (const name of Object.keys(require.cache)) if (name.startsWith(directory + path.sep)) delete require.cache[name];
  return require(AMARO);
}

function transform(code, mode) {
  try {
    return amaro.transformSync(code, { mode, sourceMap: false }).code;
  } catch (error) {
    if (error && error.code === "InvalidSyntax") {
      // amaro throws a plain object; the kernel reports a SyntaxError with a location like acorn's.
      const syntaxError = new SyntaxError(`${error.message} (${error.startLine}:${error.startColumn})`);
      syntaxError.loc = { line: error.startLine, column: error.startColumn };
      throw syntaxError;
    }
    if (error instanceof Error) {
      // A trap inside the WebAssembly (a stack overflow on a deeply nested cell) leaves its
      // memory unusable: every later cell would fail. Start over with a new instance.
      amaro = load();
      error.message = `the TypeScript type stripper failed on this cell: ${error.message}`;
    }
    throw error;
  }
}

// `{ code, sameLines }`: the cell as JavaScript, and whether its lines are the cell's own.
function toJavaScript(code) {
  try {
    return { code: transform(code, "strip-only"), sameLines: true };
  } catch (error) {
    if (!error || error.code !== "UnsupportedSyntax") throw error;
  }
  return { code: transform(code, "transform"), sameLines: false };
}

toJavaScript("let warm: number = 1;"); // compile the WebAssembly now, not in the first cell

module.exports = { toJavaScript };
