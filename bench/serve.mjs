// The benchmarks' shared pieces: a cross-origin-isolated static server and run statistics
// (used by bench/run.mjs, the TF.js benchmark, and bench/ort.mjs, the onnxruntime-web one).

import { createServer } from 'node:http';
import { createReadStream, existsSync, statSync } from 'node:fs';
import { extname, join, normalize, resolve, sep } from 'node:path';

export const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.wasm': 'application/wasm',
  '.png': 'image/png',
  '.jpg': 'image/jpeg',
};

/**
 * Serves `root` on 127.0.0.1 (a free port); `mounts` maps a URL prefix ('/models/') to another folder.
 * Resolves to { server, url }.
 */
export function serve(root, mounts = {}) {
  const server = createServer((req, res) => {
    let file;
    let base = root;
    try {
      let path = decodeURIComponent(new URL(req.url, 'http://x').pathname);
      for (const [prefix, dir] of Object.entries(mounts)) {
        if (path.startsWith(prefix)) {
          base = resolve(dir);
          path = '/' + path.slice(prefix.length);
          break;
        }
      }
      file = normalize(join(base, path));
    } catch {
      res.writeHead(400).end();
      return;
    }
    if (!file.startsWith(base + sep) || !existsSync(file) || !statSync(file).isFile()) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, {
      'content-type': TYPES[extname(file)] || 'application/octet-stream',
      'content-length': statSync(file).size,
      // Cross-origin isolation (SharedArrayBuffer, fine timers): what TF.js's threaded wasm needs.
      'cross-origin-opener-policy': 'same-origin',
      'cross-origin-embedder-policy': 'require-corp',
      'cross-origin-resource-policy': 'same-origin',
      'cache-control': 'no-store',
    });
    createReadStream(file).pipe(res);
  });
  return new Promise((ok) => server.listen(0, '127.0.0.1', () => ok({ server, url: `http://127.0.0.1:${server.address().port}/` })));
}

export function stats(times) {
  if (!times.length) return null;
  const v = [...times].sort((a, b) => a - b);
  const at = (q) => v[Math.round((v.length - 1) * q)];
  return { n: v.length, median: at(0.5), p25: at(0.25), p75: at(0.75), min: v[0], max: v[v.length - 1] };
}
