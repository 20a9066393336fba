#!/usr/bin/env node
// A tiny static server for the demo, with no dependency:
//   node www/serve.mjs [dir] [--port 8080] [--host 127.0.0.1]
// Serves the repository root by default (or `dir`, e.g. `dist`), with the right MIME types
// (application/wasm included, so WebAssembly.instantiateStreaming works) and the page's CSP
// (on pages and on scripts, which workers run under).

import { createServer } from 'node:http';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { extname, join, normalize, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const args = process.argv.slice(2);
function flag(name, fallback) {
  const i = args.indexOf(name);
  if (i >= 0 && args[i + 1]) return args.splice(i, 2)[1];
  return fallback;
}
const port = Number(flag('--port', process.env.PORT || 8080));
const host = flag('--host', process.env.HOST || '127.0.0.1');
const repoRoot = resolve(fileURLToPath(new URL('..', import.meta.url)));
const root = resolve(repoRoot, args[0] || '.');

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
const CSP = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'";

const server = createServer(async (req, res) => {
  const send = (code, text) => {
    res.writeHead(code, { 'content-type': 'text/plain; charset=utf-8' });
    res.end(req.method === 'HEAD' ? undefined : text);
  };
  if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, 'method not allowed\n');
  let pathname;
  try {
    pathname = decodeURIComponent(new URL(req.url, 'http://localhost').pathname);
  } catch {
    return send(400, 'bad request\n');
  }
  let file = normalize(join(root, pathname));
  if (file !== root && !file.startsWith(root + sep)) return send(403, 'forbidden\n');
  try {
    let st = await stat(file);
    if (st.isDirectory()) {
      if (!pathname.endsWith('/')) {
        res.writeHead(301, { location: pathname + '/' });
        return res.end();
      }
      file = join(file, 'index.html');
      st = await stat(file);
    }
    const type = TYPES[extname(file).toLowerCase()] || 'application/octet-stream';
    const headers = {
      'content-type': type,
      'content-length': st.size,
      'cache-control': 'no-cache',
      'x-content-type-options': 'nosniff',
    };
    // Scripts get it too: a worker (and a service worker) runs under the policy of its own script's
    // response, not the page's.
    if (type.startsWith('text/html') || type.startsWith('text/javascript')) headers['content-security-policy'] = CSP;
    res.writeHead(200, headers);
    if (req.method === 'HEAD') return res.end();
    createReadStream(file).on('error', () => res.destroy()).pipe(res);
  } catch {
    send(404, `not found: ${pathname}\n`);
  }
});

server.on('error', (e) => {
  console.error(`Could not serve on ${host}:${port}: ${e.message}`);
  process.exit(1);
});
server.listen(port, host, () => {
  const shown = host.includes(':') ? `[${host}]` : host;
  console.log(`Serving ${root} at http://${shown}:${port}/  (Ctrl+C to stop)`);
});
