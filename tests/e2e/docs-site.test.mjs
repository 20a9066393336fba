// The documentation site (issue 16): scripts/build-docs.sh renders docs/ with MkDocs and copies the npm
// package in; served by www/serve.mjs under its strict CSP (`default-src 'self'`) and cross-origin
// isolated (so the elements run the threaded build: issue 17), its home page shows
// two <gradcam-explainer> elements and runs the client example it prints. Both elements and the example
// must explain their photos, nothing may be asked of another site, no CSP violation or other error may
// be logged, and once loaded, explaining again makes no request at all.
//   node --test tests/e2e/docs-site.test.mjs     (part of npm run test:e2e; needs pkg/, the model, Python)

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { REPO, recordErrors, recordRequests, serveAndBrowse } from './harness.mjs';

const env = serveAndBrowse({
  prepare: () => execFileSync('bash', ['scripts/build-docs.sh'], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'], timeout: 600000 }),
  // Served as the docs ask a host to (docs/embedding.md): cross-origin isolated, so both elements run
  // the threaded build, under the strict CSP.
  serverOptions: { dir: 'target/site', extraArgs: ['--isolate'] },
});

/** Waits for the element `id` to hold a result; returns its class and label. */
const resultOf = (page, id) =>
  page.evaluate(async (id) => {
    await customElements.whenDefined('gradcam-explainer');
    const el = document.getElementById(id);
    const r =
      el.result ||
      (await new Promise((ok, fail) => {
        el.addEventListener('gradcam-result', (e) => ok(e.detail), { once: true });
        el.addEventListener('gradcam-error', (e) => fail(new Error(String(e.detail && e.detail.message))), { once: true });
      }));
    return { classIdx: r.classIdx, label: r.label, method: r.method };
  }, id);

test('the docs site explains two elements and runs its client example under a strict CSP, with no request once loaded', async () => {
  const context = await env.browser.newContext({ viewport: { width: 1280, height: 1600 } });
  const page = await context.newPage();
  const errors = recordErrors(page);
  const requests = recordRequests(context, page);
  const response = await page.goto(new URL('index.html', env.server.url).href);
  assert.match(response.headers()['content-security-policy'] || '', /default-src 'self'/, 'served under the strict CSP');
  const [cat, coffee] = await Promise.all([resultOf(page, 'cat'), resultOf(page, 'coffee')]);
  await page.waitForFunction(() => document.getElementById('client-example').dataset.classIdx, null, { timeout: 60000 });
  const example = await page.evaluate(() => ({
    classIdx: Number(document.getElementById('client-example').dataset.classIdx),
    text: document.querySelector('#client-example output').textContent,
    width: document.querySelector('#client-example canvas').width,
  }));
  const build = await page.evaluate(() => ({ isolated: self.crossOriginIsolated, build: document.getElementById('cat')._client?.model?.build }));
  console.log('docs site:', JSON.stringify({ cat, coffee, example, build, requests: requests.all.length }));
  assert.equal(build.isolated, true, 'the site is cross-origin isolated');
  assert.equal(build.build?.variant, 'threads-relaxed-simd', `the element runs the threaded build: ${JSON.stringify(build)}`);
  assert.equal(cat.classIdx, 282, `chelsea.png: ${JSON.stringify(cat)}`);
  assert.equal(coffee.classIdx, 967, 'coffee.png: the class the element asked for (espresso)');
  assert.equal(example.classIdx, 967, `the client example: ${example.text}`);
  assert.match(example.text, /Grad-CAM\+\+: espresso/);
  assert.ok(example.width > 0, 'the example drew its overlay');

  // Explaining again, with another method, asks nothing of the network.
  requests.phase = 'after load';
  await page.evaluate(() => document.getElementById('cat').setAttribute('method', 'gradcam++'));
  await page.waitForFunction(() => document.getElementById('cat').result?.method === 'gradcam++', null, { timeout: 60000 });
  assert.deepEqual(requests.during('after load'), [], 'no request once the site is loaded');
  const outside = requests.all.filter((r) => !r.url.startsWith(env.server.url));
  assert.deepEqual(outside, [], 'nothing is asked of another site');
  assert.deepEqual(errors, [], 'no CSP violation or other error');
  await context.close();
});
