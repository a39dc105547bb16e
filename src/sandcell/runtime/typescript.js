// TypeScript cells as JavaScript, with amaro (Node.js's own type stripper: swc in WebAssembly). No type checking,
// as in E2B's TypeScript kernel: a type error is not an error.
//
// Types are blanked out in place first ("strip-only"), so every position, and with it the line and column of
// any error, stays the user's own. Only a cell that needs code generated (an enum, a namespace, parameter
// properties, `import x = require()`) is transformed, and its lines are then amaro's.
"use strict";

const amaro = require(process.env.SANDCELL_AMARO || "amaro");

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
