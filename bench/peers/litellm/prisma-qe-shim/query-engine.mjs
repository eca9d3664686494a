// A stand-in for Prisma's native `query-engine` binary (5.17.0 / 393aa359...), for hosts that
// cannot reach binaries.prisma.sh. It serves the binary engine's HTTP API (GET /status, POST /,
// POST /transaction/start|{id}/commit|{id}/rollback, GET /metrics) that prisma-client-py talks to,
// and runs the queries in Prisma's own query engine compiled to WebAssembly
// (npm: @prisma/query-engine-wasm, same engine commit) over the `pg` driver (@prisma/adapter-pg).
// Everything comes from the npm registry. Binds 127.0.0.1 only.
import http from 'node:http';
import fs from 'node:fs';
import { createRequire } from 'node:module';

const ENGINE_HASH = '393aa359c9ad4a4bb28630fb5613f9c281cde053';
const args = process.argv.slice(2);
if (args.includes('--version') || args.includes('-V')) {
  console.log(`query-engine ${ENGINE_HASH}`);
  process.exit(0);
}
let port = 0;
for (let i = 0; i < args.length; i++) {
  if ((args[i] === '-p' || args[i] === '--port') && args[i + 1]) port = Number(args[++i]);
}

const require = createRequire(import.meta.url);
const pg = require('pg');
const { PrismaPg } = require('@prisma/adapter-pg');
const { bindAdapter } = require('@prisma/driver-adapter-utils');
// The package targets bundlers (it imports the .wasm as a module); instantiate it by hand as
// Prisma's own runtime does.
const qeDir = new URL('./node_modules/@prisma/query-engine-wasm/postgresql/', import.meta.url);
const bg = await import(new URL('query_engine_bg.js', qeDir).href);
const { instance } = await WebAssembly.instantiate(
  fs.readFileSync(new URL('query_engine_bg.wasm', qeDir)), { './query_engine_bg.js': bg });
bg.__wbg_set_wasm(instance.exports);
const { QueryEngine } = bg;

// prisma-client-py speaks the binary engine's GraphQL protocol; the Wasm engine only accepts the
// JSON protocol. Translate each request (single or batch) and rename the answer back to the
// GraphQL alias, with the JSON protocol's typed output values ({"$type": ..., "value": ...})
// unwrapped to what the GraphQL protocol returned (strings).
const { parse: parseGraphql, Kind } = require('graphql');
const ACTION_RE = /^(findUnique|findFirst|findMany|createOne|createMany|updateOne|updateMany|deleteOne|deleteMany|upsertOne|aggregate|groupBy)(.+?)(OrThrow)?$/;

function gqlValue(v) {
  switch (v.kind) {
    case Kind.INT: return Number(v.value);
    case Kind.FLOAT: return Number(v.value);
    case Kind.STRING: return v.value;
    case Kind.BOOLEAN: return v.value;
    case Kind.NULL: return null;
    case Kind.ENUM: return v.value;
    case Kind.LIST: return v.values.map(gqlValue);
    case Kind.OBJECT: return Object.fromEntries(v.fields.map((f) => [f.name.value, gqlValue(f.value)]));
    default: throw new Error(`unsupported GraphQL value kind ${v.kind}`);
  }
}
function gqlArgs(args) {
  return Object.fromEntries((args || []).map((a) => [a.name.value, gqlValue(a.value)]));
}
function gqlSelection(set) {
  const out = {};
  for (const sel of set.selections) {
    if (sel.kind !== Kind.FIELD) throw new Error(`unsupported selection ${sel.kind}`);
    const name = sel.name.value;
    if (!sel.selectionSet && !(sel.arguments && sel.arguments.length)) { out[name] = true; continue; }
    const node = {};
    if (sel.arguments && sel.arguments.length) node.arguments = gqlArgs(sel.arguments);
    node.selection = sel.selectionSet ? gqlSelection(sel.selectionSet) : {};
    out[name] = node;
  }
  return out;
}
// The GraphQL protocol passed Json field values as JSON text in a string; the JSON protocol takes
// a plain string as a JSON *string* value, so Json fields in write data are tagged
// {"$type":"Json","value":text}. Field types come from the schema (PRISMA_DML_PATH).
let MODELS_CACHE = null;
function modelsOf() {
  if (MODELS_CACHE) return MODELS_CACHE;
  return (MODELS_CACHE = (() => {
  const models = {};
  let cur = null;
  for (const line of datamodel.split('\n')) {
    const t = line.trim();
    const mm = t.match(/^model\s+(\w+)\s*\{/);
    if (mm) { cur = models[mm[1]] = {}; continue; }
    if (t.startsWith('}')) { cur = null; continue; }
    if (!cur || !t || t.startsWith('//') || t.startsWith('@@')) continue;
    const fm = t.match(/^(\w+)\s+(\w+)(\[\])?\??/);
    if (fm) cur[fm[1]] = { type: fm[2], list: !!fm[3] };
  }
  return models;
})());
}
const NESTED_DATA_KEYS = new Set(['create', 'update', 'data', 'upsert', 'createMany', 'connectOrCreate', 'updateMany']);
function tagJsonData(model, data) {
  if (Array.isArray(data)) return data.map((d) => tagJsonData(model, d));
  const MODELS = modelsOf();
  const fields = MODELS[model];
  if (!fields || !data || typeof data !== 'object') return data;
  const out = {};
  for (const [k, v] of Object.entries(data)) {
    const f = fields[k];
    if (f && f.type === 'Json' && typeof v === 'string') out[k] = { $type: 'Json', value: v };
    else if (f && f.type === 'Json' && v && typeof v === 'object' && typeof v.set === 'string') out[k] = { set: { $type: 'Json', value: v.set } };
    else if (f && MODELS[f.type] && v && typeof v === 'object') out[k] = tagNested(f.type, v);
    else out[k] = v;
  }
  return out;
}
function tagNested(model, v) {
  if (Array.isArray(v)) return v.map((x) => tagNested(model, x));
  const out = {};
  for (const [k, x] of Object.entries(v)) {
    if (k === 'create' || k === 'data') out[k] = tagJsonData(model, x);
    else if (NESTED_DATA_KEYS.has(k) && x && typeof x === 'object') out[k] = tagNested(model, x);
    else out[k] = x;
  }
  return out;
}
function tagArguments(action, model, args) {
  if (!model) return args;
  const out = { ...args };
  for (const k of ['data', 'create', 'update']) if (out[k] !== undefined) out[k] = tagJsonData(model, out[k]);
  return out;
}

function toJsonQuery(gql) {
  const doc = parseGraphql(gql);
  const op = doc.definitions[0];
  const field = op.selectionSet.selections[0];
  const alias = field.alias ? field.alias.value : field.name.value;
  const fname = field.name.value;
  const q = { action: null, query: { arguments: gqlArgs(field.arguments) } };
  if (fname === 'queryRaw' || fname === 'executeRaw') {
    q.action = fname;
    q.query.selection = {};
  } else {
    const m = fname.match(ACTION_RE);
    if (!m) throw new Error(`unsupported GraphQL operation ${fname}`);
    q.action = m[1] + (m[3] || '');
    q.modelName = m[2];
    q.query.selection = field.selectionSet ? gqlSelection(field.selectionSet) : { $scalars: true };
    q.query.arguments = tagArguments(q.action, q.modelName, q.query.arguments);
  }
  return { json: q, alias };
}
function untag(v) {
  if (Array.isArray(v)) return v.map(untag);
  if (v && typeof v === 'object') {
    if (typeof v.$type === 'string' && 'value' in v && Object.keys(v).length === 2) return v.value;
    const o = {};
    for (const k of Object.keys(v)) o[k] = untag(v[k]);
    return o;
  }
  return v;
}
function renameResult(res, alias) {
  if (res && res.data && typeof res.data === 'object') {
    const keys = Object.keys(res.data);
    if (keys.length === 1) res.data = { [alias]: untag(res.data[keys[0]]) };
  }
  return res;
}
async function runQuery(body, txId) {
  const req = JSON.parse(body);
  if (Array.isArray(req.batch)) {
    const items = req.batch.map((b) => toJsonQuery(b.query));
    const jb = { batch: items.map((i) => i.json) };
    if (req.transaction) jb.transaction = req.transaction === true ? {} : req.transaction;
    const out = JSON.parse(await engine.query(JSON.stringify(jb), '{}', txId));
    if (Array.isArray(out.batchResult)) out.batchResult = out.batchResult.map((r, i) => renameResult(r, items[i].alias));
    return JSON.stringify(out);
  }
  if (typeof req.query === 'string') {
    const { json, alias } = toJsonQuery(req.query);
    const out = JSON.parse(await engine.query(JSON.stringify(json), '{}', txId));
    return JSON.stringify(renameResult(out, alias));
  }
  return engine.query(body, '{}', txId); // already JSON protocol
}


const dmlPath = process.env.PRISMA_DML_PATH;
const datamodel = process.env.PRISMA_DML || fs.readFileSync(dmlPath, 'utf8');

function databaseUrl() {
  if (process.env.OVERWRITE_DATASOURCES) {
    try {
      const ds = JSON.parse(process.env.OVERWRITE_DATASOURCES);
      if (Array.isArray(ds) && ds.length && ds[0].url) return ds[0].url;
    } catch {}
  }
  const m = datamodel.match(/url\s*=\s*env\(\s*"([^"]+)"\s*\)/);
  if (m && process.env[m[1]]) return process.env[m[1]];
  const lit = datamodel.match(/url\s*=\s*"([^"]+)"/);
  if (lit) return lit[1];
  return process.env.DATABASE_URL;
}

// Prisma-specific URL parameters are not libpq's: take the ones that mean something to us out.
function poolConfig(raw) {
  const u = new URL(raw);
  const cfg = { max: 10 };
  const drop = ['connection_limit', 'pool_timeout', 'pgbouncer', 'socket_timeout', 'connect_timeout',
    'statement_cache_size', 'schema', 'sslaccept', 'sslcert', 'sslidentity', 'sslpassword', 'application_name'];
  let schema = null;
  for (const [k, v] of [...u.searchParams.entries()]) {
    if (k === 'connection_limit') cfg.max = Math.max(1, Number(v) || 10);
    if (k === 'pool_timeout') cfg.connectionTimeoutMillis = (Number(v) || 10) * 1000;
    if (k === 'schema') schema = v;
    if (k === 'application_name') cfg.application_name = v;
    if (drop.includes(k)) u.searchParams.delete(k);
  }
  let options = u.searchParams.get('options') || '';
  u.searchParams.delete('options');
  if (schema) options = `${options} -c search_path=${schema}`.trim();
  if (options) cfg.options = options;
  cfg.connectionString = u.toString();
  return { cfg, schema };
}

const { cfg, schema } = poolConfig(databaseUrl());
const pool = new pg.Pool(cfg);
pool.on('error', (e) => console.error('[qe-shim] pool error', e.message));
// @prisma/adapter-pg 5.17 rejects some column types in raw query results that the native engine
// reads (e.g. `name`, `name[]` from pg_catalog, `regclass`, `interval`); present them as text.
const postgresArray = require('postgres-array');
const AS_TEXT = new Set([18 /* char */, 19 /* name */, 24 /* regproc */, 1186 /* interval */, 2205 /* regclass */, 2206 /* regtype */]);
const AS_TEXT_ARRAY = new Set([1003 /* name[] */, 1187 /* interval[] */, 2210 /* regclass[] */]);
function fixResult(res) {
  if (!res || !Array.isArray(res.fields)) return res;
  res.fields.forEach((f, i) => {
    if (AS_TEXT.has(f.dataTypeID)) {
      f.dataTypeID = 25;
      for (const row of res.rows || []) if (Array.isArray(row) && row[i] != null && typeof row[i] !== 'string') row[i] = typeof row[i].toPostgres === 'function' ? row[i].toPostgres() : String(row[i]);
    } else if (AS_TEXT_ARRAY.has(f.dataTypeID)) {
      f.dataTypeID = 1009;
      for (const row of res.rows || []) if (Array.isArray(row) && typeof row[i] === 'string') row[i] = postgresArray.parse(row[i]);
    }
  });
  return res;
}
function wrapQueryable(q) {
  return new Proxy(q, {
    get(target, prop) {
      if (prop === 'query') return async (...a) => fixResult(await target.query(...a));
      if (prop === 'connect') return async (...a) => wrapQueryable(await target.connect(...a));
      const v = target[prop];
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
}
const adapter = bindAdapter(new PrismaPg(wrapQueryable(pool), schema ? { schema } : undefined));

const logQueries = !!process.env.LOG_QUERIES;
const engine = new QueryEngine(
  { datamodel, logLevel: process.env.RUST_LOG === 'info' ? 'info' : 'error', logQueries },
  (msg) => { if (process.env.QE_SHIM_DEBUG) console.error('[qe-shim]', msg); },
  adapter,
);
await engine.connect('{}');

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function send(res, status, body) {
  const s = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(s) });
  res.end(s);
}

function userError(e) {
  return { errors: [{ error: String(e && e.message || e), user_facing_error: { is_panic: false, message: String(e && e.message || e) } }] };
}

const server = http.createServer(async (req, res) => {
  try {
    const url = new URL(req.url, 'http://x');
    const path = url.pathname;
    if (req.method === 'GET' && path === '/status') return send(res, 200, { status: 'ok' });
    if (req.method === 'GET' && path === '/metrics') {
      if (url.searchParams.get('format') === 'prometheus') { res.writeHead(200, { 'content-type': 'text/plain' }); return res.end(''); }
      return send(res, 200, { counters: [], gauges: [], histograms: [] });
    }
    if (req.method === 'POST' && (path === '/' || path === '')) {
      const body = await readBody(req);
      const tx = req.headers['x-transaction-id'];
      const out = await runQuery(body, tx || undefined);
      return send(res, 200, out);
    }
    if (req.method === 'POST' && path === '/transaction/start') {
      const body = await readBody(req);
      const out = await engine.startTransaction(body || '{}', '{}');
      return send(res, 200, out);
    }
    const m = path.match(/^\/transaction\/([^/]+)\/(commit|rollback)$/);
    if (req.method === 'POST' && m) {
      await readBody(req);
      const out = m[2] === 'commit' ? await engine.commitTransaction(m[1], '{}') : await engine.rollbackTransaction(m[1], '{}');
      return send(res, 200, out || '{}');
    }
    send(res, 404, { errors: [{ error: `no route ${req.method} ${path}` }] });
  } catch (e) {
    send(res, 500, userError(e));
  }
});
server.keepAliveTimeout = 60000;
server.listen(port, '127.0.0.1', () => {
  if (process.env.QE_SHIM_DEBUG) console.error(`[qe-shim] listening on 127.0.0.1:${server.address().port}`);
});

async function shutdown() {
  server.close();
  try { await engine.disconnect('{}'); } catch {}
  try { await pool.end(); } catch {}
  process.exit(0);
}
process.on('SIGINT', shutdown);
process.on('SIGTERM', shutdown);
