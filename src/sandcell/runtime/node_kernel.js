// A JavaScript code context: one persistent `vm` context driven over JSON lines.
//
// Requests arrive on fd 3, events leave on fd 4; console output goes to the
// real fds 1 and 2 (streamed by the supervisor). Each cell is rewritten with
// acorn so that it can use top-level `await` and still leave its top-level
// declarations behind for the next cell: `let`/`const`/`class`/`function`
// become properties of the context's global object (re-running a cell that
// declares `let x` therefore works, as in a notebook), and the value of the
// last expression statement becomes the cell's main result. A TypeScript
// context (SANDCELL_AMARO set) first turns each cell into JavaScript
// (typescript.js), then runs it the same way.
"use strict";

const fs = require("fs");
const net = require("net");
const path = require("path");
const readline = require("readline");
const util = require("util");
const vm = require("vm");
const { createRequire } = require("module");

const acorn = require(process.env.SANDCELL_ACORN || "acorn");
let typescript = process.env.SANDCELL_AMARO ? require("./typescript.js") : null;

const REQUESTS_FD = 3;
const EVENTS_FD = 4;

function send(event) {
  try {
    fs.writeSync(EVENTS_FD, JSON.stringify(event) + "\n");
  } catch (error) {
    // The cell closed or broke our event channel: nothing can report for
    // this context any more, so end it (the supervisor reports the death).
    process.stderr.write(`sandcell: event channel lost (${error.code || error.message})\n`);
    process.exit(70);
  }
}

// Writes to a full stdout/stderr pipe are queued and finish asynchronously;
// wait for them before an event, so output is neither reordered with results
// nor cut off by the end of the cell (the supervisor drops output between runs).
function flushOutput() {
  const streams = [process.stdout, process.stderr];
  if (streams.every((stream) => !stream.writableLength)) return null; // the usual case: nothing queued
  const flushed = streams.map(
    (stream) =>
      new Promise((resolve) => {
        if (!stream.writableLength || stream.destroyed || stream.writableEnded) return resolve();
        stream.write("", () => resolve());
      }),
  );
  return Promise.race([Promise.all(flushed), new Promise((resolve) => setTimeout(resolve, 5000).unref())]);
}

const sandboxGlobals = {
  console,
  process,
  Buffer,
  URL,
  URLSearchParams,
  TextEncoder,
  TextDecoder,
  AbortController,
  setTimeout,
  clearTimeout,
  setInterval,
  clearInterval,
  setImmediate,
  clearImmediate,
  queueMicrotask,
  structuredClone,
  fetch: globalThis.fetch,
  require: createRequire(path.join(process.cwd(), "__sandcell_cell__.js")),
  __sandcell_import: (specifier) => import(specifier),
};
const context = vm.createContext(sandboxGlobals);
vm.runInContext("globalThis.global = globalThis;", context);

// Names bound by a declaration pattern (`const {a, b: [c]} = ...`).
function patternNames(node, names) {
  switch (node.type) {
    case "Identifier":
      names.push(node.name);
      break;
    case "ObjectPattern":
      for (const prop of node.properties) patternNames(prop.type === "RestElement" ? prop.argument : prop.value, names);
      break;
    case "ArrayPattern":
      for (const element of node.elements) if (element) patternNames(element, names);
      break;
    case "RestElement":
      patternNames(node.argument, names);
      break;
    case "AssignmentPattern":
      patternNames(node.left, names);
      break;
  }
  return names;
}

function importStatement(node, source) {
  const from = `(await __sandcell_import(${source.slice(node.source.start, node.source.end)}))`;
  const parts = [];
  for (const spec of node.specifiers) {
    if (spec.type === "ImportDefaultSpecifier") parts.push(`${spec.local.name} = ${from}.default;`);
    else if (spec.type === "ImportNamespaceSpecifier") parts.push(`${spec.local.name} = ${from};`);
    else parts.push(`${spec.local.name} = ${from}[${JSON.stringify(spec.imported.name ?? spec.imported.value)}];`);
  }
  return { code: parts.join(" ") || `${from};`, names: node.specifiers.map((s) => s.local.name) };
}

function parse(source) {
  const options = { ecmaVersion: "latest", allowAwaitOutsideFunction: true, allowReturnOutsideFunction: true, allowHashBang: true };
  try {
    return acorn.parse(source, { ...options, sourceType: "script" });
  } catch (scriptError) {
    try {
      return acorn.parse(source, { ...options, sourceType: "module" }); // `import` statements
    } catch {
      throw scriptError;
    }
  }
}

// Rewrite a cell into `var names; (async () => { ...; return last; })()`,
// keeping every statement on its original line so stack traces point at the
// user's own line numbers.
function rewrite(source) {
  const program = parse(source);
  const declared = [];
  const hoisted = [];
  let body = "";
  let cursor = 0;
  const statements = program.body;
  statements.forEach((node, index) => {
    body += source.slice(cursor, node.start);
    cursor = node.end;
    const text = source.slice(node.start, node.end);
    if (node.type === "VariableDeclaration") {
      const assignments = [];
      for (const decl of node.declarations) {
        declared.push(...patternNames(decl.id, []));
        if (decl.init) assignments.push(`(${source.slice(decl.id.start, decl.id.end)} = ${source.slice(decl.init.start, decl.init.end)})`);
        else if (node.kind !== "var") assignments.push(`(${decl.id.name} = undefined)`);
      }
      body += assignments.length ? `void (${assignments.join(", ")});` : ";";
    } else if (node.type === "FunctionDeclaration") {
      declared.push(node.id.name);
      hoisted.push(`globalThis.${node.id.name} = ${node.id.name};`);
      body += text;
    } else if (node.type === "ClassDeclaration") {
      declared.push(node.id.name);
      body += `${node.id.name} = ${text};`;
    } else if (node.type === "ImportDeclaration") {
      const imported = importStatement(node, source);
      declared.push(...imported.names);
      body += imported.code;
    } else if (node.type === "ExpressionStatement" && index === statements.length - 1) {
      body += `return { value: (${source.slice(node.expression.start, node.expression.end)}) };`;
    } else {
      body += text;
    }
  });
  body += source.slice(cursor);
  const head = declared.length ? `var ${[...new Set(declared)].join(", ")}; ` : "";
  return `${head}(async () => { ${hoisted.join(" ")}${body}\n})()`;
}

function formatValue(value) {
  const data = { "text/plain": typeof value === "string" ? `'${value}'` : util.inspect(value, { depth: 4, colors: false }) };
  if (value !== null && typeof value === "object") {
    try {
      const json = JSON.parse(JSON.stringify(value));
      if (json !== undefined) data["application/json"] = json;
    } catch {}
  }
  return data;
}

function errorEvent(error) {
  if (error instanceof Error || (error && typeof error === "object" && "stack" in error)) {
    const stack = String(error.stack || "")
      .split("\n")
      .filter((line) => !/node_kernel\.js|node:internal|node:vm|node:events|sigintHandlersWrap/.test(line))
      .join("\n");
    return { type: "error", name: error.name || "Error", value: String(error.message ?? ""), traceback: stack };
  }
  return { type: "error", name: "Error", value: util.inspect(error), traceback: `Uncaught ${util.inspect(error)}` };
}

let interruptCurrent = null;
process.on("SIGINT", () => {
  if (interruptCurrent) interruptCurrent();
});

// Errors from callbacks the cell left behind must not kill the context.
let lastCellErrors = null;
process.on("uncaughtException", (error) => {
  if (lastCellErrors) lastCellErrors.push(error);
  else process.stderr.write(`Uncaught ${util.inspect(error)}\n`);
});
process.on("unhandledRejection", (error) => {
  process.stderr.write(`Unhandled promise rejection: ${util.inspect(error)}\n`);
});

let executionCount = 0;

async function runCell(request) {
  executionCount += 1;
  const savedEnv = { ...process.env };
  Object.assign(process.env, request.env || {});
  let status = "ok";
  lastCellErrors = [];
  let cell = { code: request.code, sameLines: true };
  try {
    if (typescript) cell = typescript.toJavaScript(request.code);
    const script = new vm.Script(rewrite(cell.code), { filename: `cell[${executionCount}]` });
    const interrupted = new Promise((_, reject) => {
      interruptCurrent = () => {
        const error = new Error("execution interrupted");
        error.name = "KeyboardInterrupt";
        reject(error);
      };
    });
    const outcome = await Promise.race([script.runInContext(context, { breakOnSigint: true }), interrupted]);
    await flushOutput();
    if (outcome && outcome.value !== undefined) send({ type: "result", data: formatValue(outcome.value), main: true });
  } catch (error) {
    status = "error";
    await flushOutput();
    if (error instanceof SyntaxError && error.loc) {
      const line = (cell.sameLines ? request.code : cell.code).split("\n")[error.loc.line - 1] ?? "";
      send({ type: "error", name: "SyntaxError", value: error.message, traceback: `cell[${executionCount}]:${error.loc.line}\n${line}\n${" ".repeat(error.loc.column)}^\n\nSyntaxError: ${error.message}` });
    } else if (error && error.code === "ERR_SCRIPT_EXECUTION_INTERRUPTED") {
      send({ type: "error", name: "KeyboardInterrupt", value: "execution interrupted", traceback: "" });
    } else {
      send(errorEvent(error));
    }
  } finally {
    interruptCurrent = null;
    for (const key of Object.keys(process.env)) if (!(key in savedEnv)) delete process.env[key];
    Object.assign(process.env, savedEnv);
  }
  const lateErrors = lastCellErrors;
  lastCellErrors = null;
  if (status === "ok" && lateErrors.length) {
    status = "error";
    send(errorEvent(lateErrors[0]));
  }
  await flushOutput();
  send({ type: "done", status, execution_count: executionCount });
}

// A libuv pipe, not fs.createReadStream: a blocking read() parked in the
// threadpool would make process.exit() (from a cell) hang forever.
const requests = readline.createInterface({ input: new net.Socket({ fd: REQUESTS_FD, readable: true, writable: false }) });
let queue = Promise.resolve();
// A spare context (started before anyone asked for it) becomes the one asked
// for: its cwd and exactly its environment (TypeScript's, too), as if it had been started so.
// A spare that cannot become it exits: the supervisor then starts one cold.
function setup({ cwd, env }) {
  try {
    process.chdir(cwd);
    for (const key of Object.keys(process.env)) if (!(key in env)) delete process.env[key];
    Object.assign(process.env, env);
    if (process.env.SANDCELL_AMARO && !typescript) typescript = require("./typescript.js"); // a JavaScript spare becoming TypeScript
  } catch (error) {
    process.stderr.write(`sandcell: cannot set up the context: ${error.message}\n`);
    process.exit(70);
  }
  sandboxGlobals.require = createRequire(path.join(process.cwd(), "__sandcell_cell__.js"));
  send({ type: "ready" });
}

requests.on("line", (line) => {
  const request = JSON.parse(line);
  queue = queue.then(() => (request.setup ? setup(request.setup) : runCell(request)));
});
requests.on("close", () => process.exit(0));
send({ type: "ready" });
