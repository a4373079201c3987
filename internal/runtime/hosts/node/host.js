// wisp runtime host for Node.js handlers (Node 20+, CommonJS, no npm deps).
//
//   node host.js CODE_DIR HANDLER_FILE
//
// Reads request frames on fd 3 and writes response frames on fd 4. A frame
// is: uint32 big-endian header length, uint32 big-endian body length, the
// JSON header, the raw body. The first frame out is the ready frame, sent
// once the handler module is loaded (or failed to load). See
// internal/runtime/protocol.go for the header fields.
//
// The handler is `exports.handle = async (req) => ...` (or
// `module.exports = fn`, or an ES module's `export function handle` /
// default export). It returns:
//
//   string                      200 text/plain; charset=utf-8
//   Buffer / Uint8Array         200 application/octet-stream
//   other object or array       200 application/json
//   undefined / null            204, empty body
//   {statusCode, headers, body} that status (a number is required in
//                               statusCode), headers {name: value | [values]},
//                               body as above (OpenFaaS / Lambda style)
//
// Arrays are always JSON: there is no [status, body] form, because it could
// not be told apart from a JSON array. Anything else is a 500.
//
// Calls run concurrently on the event loop (WISP_CONCURRENCY is the
// worker's business). What a call writes with console.* or
// process.stdout/stderr.write comes back in its response's logs, tracked by
// AsyncLocalStorage; output outside calls goes to the instance's
// stdout/stderr.
'use strict';

const t0 = performance.now();
const fs = require('fs');
const net = require('net');
const path = require('path');
const { pathToFileURL } = require('url');
const { AsyncLocalStorage } = require('async_hooks');

function intEnv(name, def) {
  const n = parseInt(process.env[name] || '', 10);
  return Number.isFinite(n) && n > 0 ? n : def;
}

let LOG_LIMIT = intEnv('WISP_LOG_LIMIT', 64 << 10); // reset by a load frame (host.js --wait)
const TEXT = 'text/plain; charset=utf-8';
const BINARY = 'application/octet-stream';
const JSON_TYPE = 'application/json';
const EMPTY = Buffer.alloc(0);
const callLogs = new AsyncLocalStorage();

// One call's captured output: keeps about the first LOG_LIMIT bytes.
class Logs {
  constructor() {
    this.parts = [];
    this.size = 0; // bytes kept
    this.dropped = 0; // bytes not kept
  }

  write(s) {
    const n = Buffer.byteLength(s);
    if (this.size < LOG_LIMIT) {
      this.parts.push(s);
      this.size += n;
    } else {
      this.dropped += n;
    }
  }

  // The head of the output, a truncation marker, then tail (the stack).
  finish(tail) {
    let out = this.parts.length ? Buffer.from(this.parts.join('')) : EMPTY;
    let tailB = tail ? Buffer.from(tail) : EMPTY;
    const half = LOG_LIMIT >> 1;
    if (tailB.length > half && out.length + tailB.length > LOG_LIMIT) {
      const cut = tailB.length - Math.max(half, LOG_LIMIT - out.length);
      tailB = Buffer.concat([Buffer.from(`...[truncated ${cut} bytes]\n`), tailB.subarray(cut)]);
    }
    let dropped = this.dropped;
    const keep = Math.max(0, LOG_LIMIT - tailB.length);
    if (out.length > keep) {
      dropped += out.length - keep;
      out = out.subarray(0, keep);
    }
    // toString replaces a character cut in half with U+FFFD.
    let text = out.toString('utf8');
    if (dropped) text += `\n...[truncated ${dropped} bytes]\n`;
    return text + tailB.toString('utf8');
  }
}

// Route writes made during a call to that call's logs.
for (const stream of [process.stdout, process.stderr]) {
  const write = stream.write.bind(stream);
  stream.write = function (chunk, encoding, cb) {
    const logs = callLogs.getStore();
    if (!logs) return write(chunk, encoding, cb);
    if (typeof encoding === 'function') {
      cb = encoding;
      encoding = undefined;
    }
    if (typeof chunk === 'string') {
      logs.write(encoding && encoding !== 'utf8' && encoding !== 'utf-8' ? Buffer.from(chunk, encoding).toString('utf8') : chunk);
    } else {
      logs.write(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength).toString('utf8'));
    }
    if (typeof cb === 'function') process.nextTick(cb);
    return true;
  };
}

class Request {
  constructor(h, body) {
    this.id = h.id || '';
    this.activationId = h.activation_id || '';
    this.method = h.method || 'GET';
    this.path = h.path || '/';
    this.queryString = h.query || '';
    this.timeoutMs = h.timeout_ms || 0;
    // Lower-case names, first value each, as in Node's http module.
    const headers = {};
    const all = {};
    if (h.headers) {
      for (const name of Object.keys(h.headers)) {
        const v = h.headers[name];
        const values = Array.isArray(v) ? v.map(String) : [String(v)];
        const key = name.toLowerCase();
        if (!(key in headers)) headers[key] = values.length ? values[0] : '';
        all[key] = (all[key] || []).concat(values);
      }
    }
    this.headers = headers;
    this._all = all;
    this.body = body;
    this._json = undefined;
    this._query = undefined;
  }

  // Every value of a header, in order (name in any case).
  headerValues(name) {
    return (this._all[String(name).toLowerCase()] || []).slice();
  }

  text() {
    return this.body.toString('utf8');
  }

  // The body parsed as JSON (null when empty); parsed once.
  json() {
    if (this._json === undefined) this._json = this.body.length ? JSON.parse(this.body.toString('utf8')) : null;
    return this._json;
  }

  // First value of each query parameter.
  get query() {
    if (this._query === undefined) {
      const q = {};
      for (const [k, v] of new URLSearchParams(this.queryString)) if (!(k in q)) q[k] = v;
      this._query = q;
    }
    return this._query;
  }
}

class BadReturn extends Error {}

const RETURN_HINT = 'return a string, Buffer, object, array or {statusCode, headers, body}';

function typeName(v) {
  if (v === null) return 'null';
  if (typeof v === 'object') return (v.constructor && v.constructor.name) || 'object';
  return typeof v;
}

function bodyOf(v, what) {
  if (v === undefined || v === null) return [EMPTY, null];
  if (typeof v === 'string') return [Buffer.from(v, 'utf8'), TEXT];
  if (Buffer.isBuffer(v)) return [v, BINARY];
  if (v instanceof Uint8Array) return [Buffer.from(v.buffer, v.byteOffset, v.byteLength), BINARY];
  if (typeof v === 'object') {
    const s = JSON.stringify(v);
    if (s !== undefined) return [Buffer.from(s, 'utf8'), JSON_TYPE];
  }
  throw new BadReturn(`handle returned ${what(typeName(v))}; ${RETURN_HINT}`);
}

// handle's return value → [status, headers, body].
function convert(result) {
  if (result === undefined || result === null) return [204, {}, EMPTY];
  if (typeof result === 'object' && !(result instanceof Uint8Array) && !Array.isArray(result) && typeof result.statusCode === 'number') {
    const status = result.statusCode;
    if (!Number.isInteger(status) || status < 100 || status > 599) {
      throw new BadReturn(`handle returned statusCode ${status}; use an HTTP status code (100-599)`);
    }
    const [body, ctype] = bodyOf(result.body, (t) => `{statusCode, body: ${t}}`);
    const headers = {};
    let hasType = false;
    if (result.headers !== undefined && result.headers !== null) {
      if (typeof result.headers !== 'object') throw new BadReturn(`handle returned headers of type ${typeName(result.headers)}; use an object {name: value}`);
      for (const name of Object.keys(result.headers)) {
        const v = result.headers[name];
        headers[name] = Array.isArray(v) ? v.map(String) : [String(v)];
        if (name.toLowerCase() === 'content-type') hasType = true;
      }
    }
    if (ctype && !hasType) headers['Content-Type'] = [ctype];
    return [status, headers, body];
  }
  const [body, ctype] = bodyOf(result, (t) => t);
  return [200, { 'Content-Type': [ctype] }, body];
}

function errorMessage(err) {
  if (err instanceof Error) return err.message ? `${err.name}: ${err.message}` : err.name;
  return `Error: ${String(err)}`;
}

// The stack without the host's frames.
function stackOf(err) {
  if (!(err instanceof Error) || typeof err.stack !== 'string') return `${errorMessage(err)}\n`;
  const lines = err.stack.split('\n').filter((l) => !l.includes(__filename));
  return lines.join('\n') + '\n';
}

// Channel: fd 3 in, fd 4 out, both pipes driven by the event loop.
const input = new net.Socket({ fd: 3, readable: true, writable: false });
const output = new net.Socket({ fd: 4, readable: false, writable: true });
output.on('error', () => process.exit(0)); // the worker closed the channel

function send(header, body) {
  const h = Buffer.from(JSON.stringify(header), 'utf8');
  const prefix = Buffer.allocUnsafe(8);
  prefix.writeUInt32BE(h.length, 0);
  prefix.writeUInt32BE(body.length, 4);
  output.cork();
  output.write(prefix);
  output.write(h);
  if (body.length) output.write(body);
  output.uncork();
}

let handle = null;

async function serve(h, body) {
  const logs = new Logs();
  let status, headers, out, error, tail;
  try {
    const result = await callLogs.run(logs, () => handle(new Request(h, body)));
    [status, headers, out] = convert(result);
  } catch (err) {
    status = 500;
    headers = {};
    out = EMPTY;
    error = err instanceof BadReturn ? err.message : errorMessage(err);
    tail = err instanceof BadReturn ? '' : stackOf(err);
  }
  const header = { id: h.id || '', status, headers };
  if (error !== undefined) header.error = error;
  const text = logs.finish(tail);
  if (text) header.logs = text;
  send(header, out);
}

function dispatch(h, body) {
  serve(h, body).catch((err) => {
    process.stderr.write(`wisp host: ${err && err.stack}\n`);
    send({ id: h.id || '', status: 500, headers: {}, error: errorMessage(err) }, EMPTY);
  });
}

// Frame parser. Chunks are joined only once a whole frame is there, so a
// large body costs one copy.
let chunks = [];
let have = 0;
let need = 8;

function onData(chunk) {
  chunks.push(chunk);
  have += chunk.length;
  if (have < need) return;
  const buf = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, have);
  let off = 0;
  for (;;) {
    if (buf.length - off < 8) {
      need = 8;
      break;
    }
    const hl = buf.readUInt32BE(off);
    const bl = buf.readUInt32BE(off + 4);
    if (buf.length - off < 8 + hl + bl) {
      need = 8 + hl + bl;
      break;
    }
    const h = JSON.parse(buf.toString('utf8', off + 8, off + 8 + hl));
    const body = bl ? buf.subarray(off + 8 + hl, off + 8 + hl + bl) : EMPTY;
    off += 8 + hl + bl;
    dispatch(h, body);
  }
  chunks = off === buf.length ? [] : [buf.subarray(off)];
  have = buf.length - off;
}

// Location of a load error: "handler.js line 3".
function whereOf(err, codeDir) {
  if (!(err instanceof Error) || typeof err.stack !== 'string') return '';
  const lines = err.stack.split('\n');
  // A SyntaxError's stack starts with "/path/file.js:LINE".
  const first = /^(\/.+):(\d+)$/.exec(lines[0]);
  if (first) return ` (${path.relative(codeDir, first[1])} line ${first[2]})`;
  for (const l of lines) {
    const m = /\(?(?:file:\/\/)?(\/[^():]+):(\d+):\d+\)?$/.exec(l.trim());
    if (m && m[1].startsWith(codeDir + path.sep)) return ` (${path.relative(codeDir, m[1])} line ${m[2]})`;
  }
  return '';
}

async function load(codeDir, handlerFile) {
  const file = path.resolve(codeDir, handlerFile);
  if (!fs.existsSync(file)) {
    throw new LoadFailure(`Error: handler file ${handlerFile} is not in the function's code`);
  }
  let mod;
  if (file.endsWith('.mjs')) {
    mod = await import(pathToFileURL(file).href);
  } else {
    try {
      mod = require(file);
    } catch (err) {
      if (err && err.code !== 'ERR_REQUIRE_ESM') throw err;
      mod = await import(pathToFileURL(file).href);
    }
  }
  const candidates = [mod && mod.handle, mod, mod && mod.default && mod.default.handle, mod && mod.default];
  const fn = candidates.find((c) => typeof c === 'function');
  if (!fn) {
    throw new LoadFailure(`TypeError: ${handlerFile} does not export a function handle; add exports.handle = async (req) => ...`);
  }
  return fn;
}

class LoadFailure extends Error {}

// waitLoad reads the one load frame a pre-provisioned host waits for; it
// resolves to {load, rest} (load null when the channel closed first).
function waitLoad() {
  return new Promise((resolve) => {
    let acc = EMPTY;
    const onEnd = () => resolve({ load: null, rest: EMPTY });
    const onChunk = (chunk) => {
      acc = acc.length ? Buffer.concat([acc, chunk]) : chunk;
      if (acc.length < 8) return;
      const hl = acc.readUInt32BE(0);
      const bl = acc.readUInt32BE(4);
      if (acc.length < 8 + hl + bl) return;
      input.removeListener('data', onChunk);
      input.removeListener('end', onEnd);
      input.pause();
      let h = null;
      try {
        h = JSON.parse(acc.toString('utf8', 8, 8 + hl));
      } catch {}
      resolve({ load: h && h.load, rest: acc.subarray(8 + hl + bl) });
    };
    input.on('data', onChunk);
    input.on('end', onEnd);
  });
}

async function main() {
  const argv = process.argv.slice(2);
  // host.js --wait: a pre-provisioned sandbox. Node starts before any
  // function is known, says {"idle": true}, and waits for one load frame
  // {"load": {"code_dir", "handler", "env"}} that binds it to a function.
  const wait = argv.length === 1 && argv[0] === '--wait';
  if (!wait && argv.length !== 2) {
    process.stderr.write('usage: host.js CODE_DIR HANDLER_FILE | host.js --wait\n');
    process.exit(2);
  }
  process.on('SIGTERM', () => process.exit(0));
  let codeDir;
  let handlerFile;
  let tLoad = t0;
  let rest = EMPTY;
  if (wait) {
    send({ idle: true, pid: process.pid }, EMPTY);
    const got = await waitLoad();
    if (!got.load) {
      process.exit(0);
    }
    tLoad = performance.now();
    Object.assign(process.env, got.load.env || {});
    LOG_LIMIT = intEnv('WISP_LOG_LIMIT', 64 << 10);
    codeDir = path.resolve(got.load.code_dir);
    handlerFile = got.load.handler;
    rest = got.rest;
  } else {
    codeDir = path.resolve(argv[0]);
    handlerFile = argv[1];
  }
  try {
    process.chdir(fs.statSync('/tmp').isDirectory() && canWrite('/tmp') ? '/tmp' : codeDir);
  } catch {
    process.chdir(codeDir);
  }
  try {
    handle = await load(codeDir, handlerFile);
  } catch (err) {
    // One line: the message's first (a require stack follows in the logs).
    const error = err instanceof LoadFailure ? err.message : errorMessage(err).split('\n')[0] + whereOf(err, codeDir);
    const logs = err instanceof LoadFailure ? '' : (err && err.stack) || String(err);
    send({ ready: false, error, logs }, EMPTY);
    output.end(() => process.exit(1));
    return;
  }
  send({ ready: true, init_ms: performance.now() - tLoad, pid: process.pid }, EMPTY);
  input.on('data', onData);
  input.on('end', () => process.exit(0));
  input.on('error', () => process.exit(0));
  if (rest.length) onData(rest);
  input.resume();
}

function canWrite(dir) {
  try {
    fs.accessSync(dir, fs.constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

main();
