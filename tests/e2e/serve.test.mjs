// www/serve.mjs refuses what a site does not need (issue 14), with plain HTTP, no browser:
//   node --test tests/e2e/serve.test.mjs     (part of npm run test:e2e)
// Raw requests go through node:http, so that the path is sent byte for byte as written here and
// the Host header can be anything.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer } from './harness.mjs';

let server; // the repository root, as scripts/demo.sh serves it
let dist; // another folder, as dist/ is served: a temporary one with folders to redirect to, and an extra allowed host
let distDir;
let port;

before(async () => {
  distDir = mkdtempSync(join(tmpdir(), 'gradcam-serve-'));
  for (const [name, text] of [['index.html', '<p>root'], ['demo.js', 'export {};'], ['.hidden', 'secret'], ['sub/index.html', '<p>sub'], ['evil.example/www/index.html', '<p>here']]) {
    mkdirSync(join(distDir, name, '..'), { recursive: true });
    writeFileSync(join(distDir, name), text);
  }
  [server, dist] = await Promise.all([startServer(), startServer({ dir: distDir, extraArgs: ['--allow-host', 'gradcam.example'] })]);
  port = Number(new URL(server.url).port);
});

after(async () => {
  await Promise.all([server?.stop(), dist?.stop()]);
  if (distDir) rmSync(distDir, { recursive: true, force: true });
});

/** GET (or `method`) `path` exactly as written, with `headers` (Host defaults to 127.0.0.1:port). */
function raw(path, { headers = {}, method = 'GET', on = server } = {}) {
  const p = Number(new URL(on.url).port);
  return new Promise((ok, fail) => {
    const req = request({ host: '127.0.0.1', port: p, path, method, headers: { host: `127.0.0.1:${p}`, ...headers }, setHost: false }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => ok({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString('latin1') }));
    });
    req.on('error', fail);
    req.end();
  });
}

test('only the site is served: the page, www/, pkg/, assets/; no dotfile, no source, no test file unless allowed', async () => {
  const want = {
    '/': 200,
    '/index.html': 200,
    '/www/demo.js': 200,
    '/www/gradcam-explainer.js': 200,
    '/pkg/gradcam_wasm_bg.wasm': 200,
    '/assets/models/efficientnet-lite0.safetensors': 200,
    '/assets/samples/chelsea.png': 200,
    '/tests/e2e/blank.html': 200, // the harness passes --allow tests/e2e
    '/.git/config': 404,
    '/.git/HEAD': 404,
    '/.gitignore': 404,
    '/%2Egit/config': 404,
    '/www/../.git/config': 404,
    '/www/%2E%2E/.git/config': 404,
    '/www/%2e%2e%2f.git%2fconfig': 404,
    '/Cargo.toml': 404,
    '/src/lib.rs': 404,
    '/package.json': 404,
    '/README.md': 404,
    '/node_modules/playwright-core/package.json': 404,
    '/scripts/demo.sh': 404,
    '/tests/cli.rs': 404, // tests/ itself is not allowed, only tests/e2e and tests/fixtures
    '/www/..%2FCargo.toml': 404,
    '/%2e%2e/%2e%2e/etc/passwd': 404,
    '/assets/..\\Cargo.toml': 404,
  };
  const got = {};
  for (const path of Object.keys(want)) got[path] = (await raw(path)).status;
  assert.deepEqual(got, want);
  // HEAD is served like GET, without a body; other methods are refused.
  assert.equal((await raw('/www/demo.js', { method: 'HEAD' })).status, 200);
  assert.equal((await raw('/www/demo.js', { method: 'POST' })).status, 405);
  assert.equal((await raw('/www/demo.js', { method: 'PUT' })).status, 405);
  // Another root (as dist/ is served): everything in it, still no dotfile.
  assert.equal((await raw('/demo.js', { on: dist, headers: { host: `127.0.0.1:${new URL(dist.url).port}` } })).status, 200);
  assert.equal((await raw('/.hidden', { on: dist, headers: { host: `127.0.0.1:${new URL(dist.url).port}` } })).status, 404);
});

test('no redirect ever leaves the host: encoded slashes and dot segments are normalised first', async () => {
  const tries = [
    '/%2Fevil.example%2F..%2Fsub',
    '/%2Fevil.example%2F..%2Fwww',
    '//evil.example/../sub',
    '//evil.example/%2e%2e/sub',
    '//evil.example/www',
    '///evil.example/www',
    '/%2F%2Fevil.example/www',
    '/%5Cevil.example/www',
    '/%5C%5Cevil.example%2F..%2Fsub',
    '/https:%2F%2Fevil.example%2F..%2F..%2Fsub',
    '/./sub',
    '//sub',
    '/sub/./',
    '/sub',
  ];
  const on = dist;
  const host = `127.0.0.1:${new URL(dist.url).port}`;
  const seen = [];
  let redirects = 0;
  for (const path of tries) {
    const r = await raw(path, { on, headers: { host } });
    const loc = r.headers.location;
    seen.push(`${path} -> ${r.status}${loc ? ` ${loc}` : ''}`);
    if (loc !== undefined) {
      redirects++;
      assert.ok(loc.startsWith('/') && !loc.startsWith('//') && !loc.startsWith('/\\'), `${path}: Location ${loc} could leave the host`);
      assert.ok(!/^[a-z][a-z0-9+.-]*:/i.test(loc), `${path}: Location ${loc} holds a scheme`);
      assert.equal(new URL(loc, dist.url).host, new URL(dist.url).host, `${path}: Location ${loc} resolves off the host`);
      // And it leads somewhere real on this server.
      assert.equal((await raw(loc, { on, headers: { host } })).status, 200, `${path}: Location ${loc}`);
    }
  }
  console.log(`# redirects: ${seen.join('; ')}`);
  assert.ok(redirects >= 3, `the folder redirects were exercised: ${seen.join('; ')}`);
  assert.equal((await raw('/sub', { on, headers: { host } })).headers.location, '/sub/');
  assert.equal((await raw('//evil.example/www', { on, headers: { host } })).headers.location, '/evil.example/www/');
  // The issue's example on the repository server: no redirect at all now.
  const r = await raw('/%2Fevil.example%2F..%2Fwww');
  assert.equal(r.status, 404);
  assert.equal(r.headers.location, undefined);
});

test('the Host header must name this server', async () => {
  const ok = ['127.0.0.1', 'localhost', 'LOCALHOST', '[::1]'].map((h) => `${h}:${port}`);
  for (const host of ok) assert.equal((await raw('/www/demo.js', { headers: { host } })).status, 200, host);
  const bad = ['evil.example', `evil.example:${port}`, `127.0.0.1:${port + 1}`, '127.0.0.1', `localhost.evil.example:${port}`, `127.0.0.1.nip.io:${port}`, `gradcam.example:${port}`];
  for (const host of bad) {
    const r = await raw('/www/demo.js', { headers: { host } });
    assert.equal(r.status, 421, `Host: ${host}`);
    assert.ok(!r.body.includes('import'), 'no file content for a wrong Host');
  }
  // `--allow-host NAME` adds a name (the server for a LAN or a tunnel): here on the second server.
  const distPort = new URL(dist.url).port;
  assert.equal((await raw('/demo.js', { on: dist, headers: { host: `gradcam.example:${distPort}` } })).status, 200);
  assert.equal((await raw('/demo.js', { on: dist, headers: { host: '' } })).status, 400, 'an empty Host');
  assert.equal((await raw('/demo.js', { on: dist, headers: { host: `other.example:${distPort}` } })).status, 421);
});

test('pages and scripts carry a CSP with frame-ancestors and base-uri; files carry validators and answer 304', async () => {
  for (const path of ['/', '/www/embed-example.html', '/www/worker.js']) {
    const r = await raw(path);
    assert.equal(r.status, 200, path);
    const csp = r.headers['content-security-policy'] || '';
    const directives = Object.fromEntries(csp.split(';').map((d) => d.trim().split(/\s+/)).map(([k, ...v]) => [k, v.join(' ')]));
    assert.equal(directives['default-src'], "'self'", `${path}: ${csp}`);
    assert.equal(directives['script-src'], "'self' 'wasm-unsafe-eval'", `${path}: ${csp}`);
    assert.equal(directives['frame-ancestors'], "'self'", `${path}: ${csp}`);
    assert.equal(directives['base-uri'], "'none'", `${path}: ${csp}`);
    assert.equal(r.headers['x-content-type-options'], 'nosniff');
  }
  const wasm = await raw('/pkg/gradcam_wasm_bg.wasm', { method: 'HEAD' });
  assert.equal(wasm.headers['content-type'], 'application/wasm');
  const model = await raw('/assets/models/efficientnet-lite0.safetensors', { method: 'HEAD' });
  assert.ok(model.headers.etag && model.headers['last-modified'], 'the model has an ETag and a Last-Modified');
  assert.equal((await raw('/assets/models/efficientnet-lite0.safetensors', { headers: { 'if-none-match': model.headers.etag } })).status, 304);
  assert.equal((await raw('/assets/models/efficientnet-lite0.safetensors', { headers: { 'if-modified-since': model.headers['last-modified'] } })).status, 304);
  assert.equal((await raw('/assets/models/efficientnet-lite0.safetensors', { method: 'HEAD', headers: { 'if-none-match': '"other"' } })).status, 200);
});
