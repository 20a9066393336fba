#!/usr/bin/env node
// A tiny static server for the demo, with no dependency:
//   node www/serve.mjs [dir] [--port 8080] [--host 127.0.0.1] [--allow PATH]... [--allow-host NAME]... [--isolate]
//   --isolate: cross-origin isolation (COOP same-origin + COEP require-corp on every response), so
//   pages get SharedArrayBuffer: the worker runs the threaded build (a kernel thread per core), and
//   an aborted call stops its running method mid-way. The demo (scripts/demo.sh) serves with it.
// Serves the repository root by default (or `dir`, e.g. `dist`), with the right MIME types
// (application/wasm included, so WebAssembly.instantiateStreaming works) and the page's CSP
// (on pages and on scripts, which workers run under).
//
// What it refuses (issue 14):
// - anything a site does not need: from the repository root only index.html and the folders www/,
//   pkg/, assets/ and dist/ (plus each `--allow PATH`, e.g. tests/e2e); from another `dir` (dist)
//   all of it; never a dotfile or dot-folder (.git/config) anywhere. All of these answer 404.
// - a redirect off the site: the path is decoded and normalised first ('..', '.' and empty
//   segments, encoded slashes), and the only redirect (a folder without its trailing slash) goes to
//   that normalised path, which starts with one '/' and never holds a scheme.
// - a Host header that does not name it (DNS rebinding): localhost, 127.0.0.1 and [::1] with its
//   port, the host it was told to bind (every local address when that is 0.0.0.0 or ::), and each
//   `--allow-host NAME`; anything else answers 421, no Host at all 400.
// Files carry ETag and Last-Modified and answer conditional requests with 304, so that the model
// cache (www/model-loader.js) revalidates a cached model cheaply.

import { createServer } from 'node:http';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { networkInterfaces } from 'node:os';
import { extname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const args = process.argv.slice(2);
function flag(name, fallback) {
  const i = args.indexOf(name);
  if (i >= 0 && args[i + 1]) return args.splice(i, 2)[1];
  return fallback;
}
function flags(name) {
  const out = [];
  for (let v = flag(name); v !== undefined; v = flag(name)) out.push(v);
  return out;
}
const port = Number(flag('--port', process.env.PORT || 8080));
const host = flag('--host', process.env.HOST || '127.0.0.1');
const extraAllowed = flags('--allow');
const extraHosts = flags('--allow-host');
const isolateAt = args.indexOf('--isolate');
const isolate = isolateAt >= 0 && args.splice(isolateAt, 1).length === 1;
const repoRoot = resolve(fileURLToPath(new URL('..', import.meta.url)));
const root = resolve(repoRoot, args[0] || '.');

/** Path segments ('www', 'demo.js') a site may ask for; null: everything under the root but dotfiles. */
const SITE = root === repoRoot ? ['index.html', 'www', 'pkg', 'assets', 'dist'] : null;
const allowed = (SITE || []).concat(extraAllowed).map((p) => p.split(/[\\/]+/).filter(Boolean));

function isAllowed(segments) {
  if (segments.some((s) => s.startsWith('.'))) return false; // .git, .env, .ci, ..: never
  if (!SITE) return true;
  if (segments.length === 0) return true; // the page itself
  return allowed.some((prefix) => prefix.length > 0 && prefix.every((p, i) => segments[i] === p));
}

/** host:port values the Host header may carry. */
function allowedHosts(port) {
  const names = new Set(['localhost', '127.0.0.1', '[::1]']);
  const add = (h) => names.add((h.includes(':') && !h.startsWith('[') ? `[${h}]` : h).toLowerCase());
  add(host);
  if (host === '0.0.0.0' || host === '::' || host === '[::]') {
    for (const list of Object.values(networkInterfaces())) for (const a of list || []) add(a.address.split('%')[0]);
  }
  for (const h of extraHosts) add(h);
  const out = new Set();
  for (const n of names) {
    out.add(`${n}:${port}`);
    if (port === 80) out.add(n);
  }
  return out;
}
let HOSTS = new Set(); // filled once listening (the port may be 0: any free one)

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.md': 'text/markdown; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8',
  '.wasm': 'application/wasm',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.jpg': 'image/jpeg',
  '.jpeg': 'image/jpeg',
  '.gif': 'image/gif',
  '.webp': 'image/webp',
  '.avif': 'image/avif',
  '.ico': 'image/x-icon',
  '.safetensors': 'application/octet-stream',
  '.pth': 'application/octet-stream',
  '.pt': 'application/octet-stream',
  '.bin': 'application/octet-stream',
};
// frame-ancestors: no other site may frame the page (clickjacking); base-uri: no injected <base>
// can redirect the page's relative URLs (scripts, the worker, the model).
const CSP = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; base-uri 'none'; frame-ancestors 'self'";

const server = createServer(async (req, res) => {
  const send = (code, text, extra = {}) => {
    res.writeHead(code, { 'content-type': 'text/plain; charset=utf-8', 'x-content-type-options': 'nosniff', ...extra });
    res.end(req.method === 'HEAD' ? undefined : text);
  };
  const hostHeader = req.headers.host;
  if (!hostHeader) return send(400, 'bad request: no Host header\n');
  if (!HOSTS.has(hostHeader.toLowerCase())) return send(421, 'misdirected request: this server does not answer for that Host\n');
  if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, 'method not allowed\n', { allow: 'GET, HEAD' });
  // The path's segments, decoded one by one (so %2F is a character of a segment, never a separator,
  // and cannot make '//host'); '.' and empty segments dropped, '..' refused.
  let segments;
  try {
    const raw = (req.url || '').split(/[?#]/)[0];
    if (!raw.startsWith('/')) return send(400, 'bad request\n');
    segments = raw.split('/').filter((s) => s !== '' && s !== '.').map(decodeURIComponent);
  } catch {
    return send(400, 'bad request\n');
  }
  if (segments.some((s) => s === '..' || s.includes('/') || s.includes('\\') || s.includes('\0'))) return send(404, 'not found\n');
  if (!isAllowed(segments)) return send(404, 'not found\n');
  const pathname = '/' + segments.map(encodeURIComponent).join('/');
  let file = join(root, ...segments);
  try {
    let st = await stat(file);
    if (st.isDirectory()) {
      file = join(file, 'index.html');
      st = await stat(file); // a folder without index.html: 404, no listing
      const slash = (req.url || '').split(/[?#]/)[0].endsWith('/');
      if (!slash) {
        // Always a path on this host: one leading '/', then a non-empty encoded segment.
        res.writeHead(301, { location: pathname === '/' ? '/' : pathname + '/' });
        return res.end();
      }
    }
    if (!st.isFile()) throw new Error('not a file');
    const type = TYPES[extname(file).toLowerCase()] || 'application/octet-stream';
    const etag = `"${st.size.toString(16)}-${Math.floor(st.mtimeMs).toString(16)}"`;
    const lastModified = new Date(Math.floor(st.mtimeMs / 1000) * 1000).toUTCString();
    const headers = {
      'content-type': type,
      'cache-control': 'no-cache',
      etag,
      'last-modified': lastModified,
      'x-content-type-options': 'nosniff',
      'referrer-policy': 'no-referrer',
    };
    if (isolate) Object.assign(headers, { 'cross-origin-opener-policy': 'same-origin', 'cross-origin-embedder-policy': 'require-corp' });
    // Scripts get it too: a worker (and a service worker) runs under the policy of its own script's
    // response, not the page's.
    if (type.startsWith('text/html') || type.startsWith('text/javascript')) headers['content-security-policy'] = CSP;
    const inm = req.headers['if-none-match'];
    const ims = Date.parse(req.headers['if-modified-since'] || '');
    const fresh = inm !== undefined
      ? inm.split(',').some((t) => t.trim() === etag || t.trim() === `W/${etag}` || t.trim() === '*')
      : Number.isFinite(ims) && Math.floor(st.mtimeMs / 1000) * 1000 <= ims;
    if (fresh) {
      res.writeHead(304, headers);
      return res.end();
    }
    headers['content-length'] = st.size;
    res.writeHead(200, headers);
    if (req.method === 'HEAD') return res.end();
    createReadStream(file).on('error', () => res.destroy()).pipe(res);
  } catch {
    send(404, 'not found\n');
  }
});

server.on('error', (e) => {
  console.error(`Could not serve on ${host}:${port}: ${e.message}`);
  process.exit(1);
});
server.listen(port, host, () => {
  const actual = server.address().port;
  HOSTS = allowedHosts(actual);
  const shown = host.includes(':') ? `[${host}]` : host;
  console.log(`Serving ${root} at http://${shown}:${actual}/  (Ctrl+C to stop)`);
});
