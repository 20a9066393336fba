// The npm package as users install it (issue 16): scripts/pack.sh packs the tarball, and three fresh
// projects install it with npm (the tarball is local; webpack and vite come from the registry):
//   - a plain HTML page, served from a subfolder, importing the element by its path;
//   - a webpack 5 app importing 'gradcam-wasm/element', and a Vite app whose page is exactly the
//     snippet docs/embedding.md gives first.
// Each page holds only `<gradcam-explainer src="chelsea.png">`: the worker, the wasm and the default
// model come from the package, found from `import.meta.url` (the bundlers copy them). All three must
// give the same explanation (tiger cat, the same heatmap), and ask for nothing outside their site.
//   node --test tests/e2e/package.test.mjs     (part of npm run test:e2e; needs pkg/ and the model)

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO, launchBrowser, recordErrors, startServer } from './harness.mjs';

const VERSION = /^version = "(.*)"/m.exec(readFileSync(join(REPO, 'Cargo.toml'), 'utf8'))[1];
const TARBALL = join(REPO, `target/npm/gradcam-wasm-${VERSION}.tgz`);
const PAGE = (script) =>
  `<!doctype html><html><head><meta charset="utf-8"><link rel="icon" href="favicon.svg"><title>gradcam-wasm from npm</title></head>
<body><gradcam-explainer id="x" src="chelsea.png" eager></gradcam-explainer>${script}</body></html>\n`;

let root;
let server;
let browser;

const run = (cwd, cmd, args) => execFileSync(cmd, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8', timeout: 300000 });

/** A fresh npm project in `dir` with the tarball and `more` packages installed. */
function project(dir, more = []) {
  mkdirSync(dir, { recursive: true });
  run(dir, 'npm', ['init', '-y']);
  run(dir, 'npm', ['pkg', 'set', 'type=module']);
  run(dir, 'npm', ['install', '--no-audit', '--no-fund', TARBALL, ...more]);
}

/** The photo and an icon (else the browser asks for /favicon.ico) in the folder a site serves. */
function siteFiles(dir) {
  copyFileSync(join(REPO, 'assets/samples/chelsea.png'), join(dir, 'chelsea.png'));
  copyFileSync(join(REPO, 'www/favicon.svg'), join(dir, 'favicon.svg'));
}

function plainProject(dir) {
  project(dir);
  siteFiles(dir);
  writeFileSync(join(dir, 'index.html'), PAGE('<script type="module" src="./node_modules/gradcam-wasm/www/gradcam-explainer.js"></script>'));
}

function webpackProject(dir) {
  project(dir, ['webpack@5', 'webpack-cli@7']);
  mkdirSync(join(dir, 'src'));
  writeFileSync(join(dir, 'src/index.js'), "import 'gradcam-wasm/element';\n");
  writeFileSync(join(dir, 'webpack.config.cjs'), "module.exports = { mode: 'production', entry: './src/index.js', output: { path: __dirname + '/dist', filename: 'main.js' } };\n");
  run(dir, join(dir, 'node_modules/.bin/webpack'), ['--config', 'webpack.config.cjs']);
  siteFiles(join(dir, 'dist'));
  writeFileSync(join(dir, 'dist/index.html'), PAGE('<script src="main.js"></script>'));
}

/** The HTML snippet docs/embedding.md gives first ("Install and use"), so the docs show what is tested. */
function documentedSnippet() {
  const doc = readFileSync(join(REPO, 'docs/embedding.md'), 'utf8');
  const section = doc.slice(doc.indexOf('## Install and use'));
  const html = /```html\n([\s\S]*?)```/.exec(section)[1];
  assert.match(html, /import 'gradcam-wasm\/element'/, 'the documented snippet imports the element');
  return html.replace('src="cat.jpg"', 'id="x" src="chelsea.png"');
}

function viteProject(dir) {
  project(dir, ['vite@8']);
  mkdirSync(join(dir, 'public'));
  siteFiles(join(dir, 'public'));
  // The page is docs/embedding.md's snippet as it stands.
  writeFileSync(join(dir, 'index.html'), `<!doctype html><html><head><meta charset="utf-8"><link rel="icon" href="favicon.svg"><title>gradcam-wasm from npm</title></head><body>\n${documentedSnippet()}</body></html>\n`);
  run(dir, join(dir, 'node_modules/.bin/vite'), ['build', '--base', './']);
}

before(async () => {
  run(REPO, 'bash', ['scripts/pack.sh']);
  root = mkdtempSync(join(tmpdir(), 'gradcam-package-'));
  plainProject(join(root, 'plain'));
  webpackProject(join(root, 'webpack'));
  viteProject(join(root, 'vite'));
  [server, browser] = await Promise.all([startServer({ dir: root }), launchBrowser()]);
});

after(async () => {
  await browser?.close().catch(() => {});
  await server?.stop();
  if (root) rmSync(root, { recursive: true, force: true });
});

/** The element's first result on `path`: class, label, heatmap size and digest, and the requests made. */
async function explainAt(path) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = recordErrors(page);
  const requests = [];
  context.on('request', (r) => requests.push(r.url()));
  await page.goto(new URL(path, server.url).href);
  const result = await page.evaluate(async () => {
    await customElements.whenDefined('gradcam-explainer');
    const el = document.getElementById('x');
    const r =
      el.result ||
      (await new Promise((ok, fail) => {
        el.addEventListener('gradcam-result', (e) => ok(e.detail), { once: true });
        el.addEventListener('gradcam-error', (e) => fail(new Error(String(e.detail && e.detail.message))), { once: true });
      }));
    let sum = 0;
    for (const v of r.heatmap) sum += v;
    return { classIdx: r.classIdx, label: r.label, width: r.width, height: r.height, sum, backend: r.backend };
  });
  await context.close();
  return { ...result, requests, errors };
}

// A strict TypeScript program over every entry point's types (tsc from the registry).
const TYPED_USE = `import { GradcamClient, toImageData, type ImageInput } from 'gradcam-wasm/client';
import type { GradcamExplainerElement } from 'gradcam-wasm/element';
import init, { Explainer, type ExplainResult, type MethodInfo } from 'gradcam-wasm';

export async function check(image: ImageInput, bytes: Uint8Array): Promise<number> {
  await init();
  new Explainer(bytes, { backend: 'cpu', memoryBudgetMiB: 256 }).free();
  const client = new GradcamClient();
  const controller = new AbortController();
  await client.load('model.safetensors', { backend: 'cpu', memoryBudgetMiB: 256 });
  const r: ExplainResult = await client.explain(image, '281:1,285:0.5', { method: 'gradcam', signal: controller.signal });
  const overlay: ImageData = await client.overlay(await toImageData(image), r, { colormap: 'jet', alpha: 0.5 });
  const methods: MethodInfo[] = await client.methods();
  // @ts-expect-error: method names are a union generated from the Rust list, so a typo fails here
  await client.explain(image, 0, { method: 'gradkam' });
  // @ts-expect-error: so are colormaps
  await client.overlay(await toImageData(image), r, { colormap: 'rainbow' });
  const el = document.querySelector('gradcam-explainer');
  el?.addEventListener('gradcam-result', (e) => console.log(e.detail.classIdx));
  const typed: GradcamExplainerElement | null = el;
  return r.classIdx + overlay.width + methods.length + (typed?.result?.classIdx ?? 0);
}
`;

/** The package.json inside the tarball. */
const packedManifest = () => JSON.parse(execFileSync('tar', ['-xzOf', TARBALL, 'package/package.json'], { encoding: 'utf8' }));

test('the package.json has the fields npm and bundlers read, and names its repository when it has a URL', () => {
  const m = packedManifest();
  assert.deepEqual(Object.keys(m.exports).filter((k) => !k.startsWith('./models') && k !== './pkg/*' && k !== './package.json'), ['.', './element', './client', './worker']);
  for (const field of ['files', 'sideEffects', 'types', 'license', 'keywords']) assert.ok(m[field], `package.json has ${field}`);
  const url = 'https://example.org/gradcam-wasm.git';
  try {
    execFileSync('bash', ['scripts/pack.sh'], { cwd: REPO, env: { ...process.env, GRADCAM_REPOSITORY: url }, stdio: 'pipe' });
    assert.deepEqual(packedManifest().repository, { type: 'git', url });
    execFileSync('bash', ['scripts/pack.sh'], { cwd: REPO, env: { ...process.env, GRADCAM_REPOSITORY: '/a/local/path' }, stdio: 'pipe' });
    assert.equal(packedManifest().repository, undefined, 'a local path is not a repository URL');
  } finally {
    run(REPO, 'bash', ['scripts/pack.sh']);
  }
});

test("the package's TypeScript types compile in a strict program", () => {
  const dir = join(root, 'vite');
  run(dir, 'npm', ['install', '--no-audit', '--no-fund', 'typescript@5']);
  writeFileSync(join(dir, 'check.ts'), TYPED_USE);
  // lib esnext: wasm-bindgen's declarations name Symbol.dispose.
  const options = { target: 'es2022', module: 'esnext', moduleResolution: 'bundler', lib: ['esnext', 'dom'], strict: true, noEmit: true };
  writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify({ compilerOptions: options, files: ['check.ts'] }));
  try {
    run(dir, join(dir, 'node_modules/.bin/tsc'), ['-p', '.']);
  } catch (e) {
    assert.fail(`tsc found errors:\n${e.stdout}${e.stderr}`);
  }
});

test('the packed tarball explains the same photo from a plain page in a subfolder, a webpack 5 app and a Vite app', async () => {
  const results = {};
  for (const [name, path] of [
    ['plain page', 'plain/index.html'],
    ['webpack 5', 'webpack/dist/index.html'],
    ['Vite', 'vite/dist/index.html'],
  ]) {
    results[name] = await explainAt(path);
    const { requests, errors, ...shown } = results[name];
    console.log(`${name}: ${JSON.stringify(shown)}; ${requests.length} requests`);
    assert.deepEqual(errors, [], `${name}: no console errors`);
    const outside = requests.filter((u) => !u.startsWith(server.url));
    assert.deepEqual(outside, [], `${name}: nothing is asked of another site`);
    assert.ok(requests.some((u) => /\.safetensors$/.test(u)), `${name}: the bundled model was loaded`);
  }
  const reference = results['plain page'];
  assert.equal(reference.classIdx, 282, 'chelsea.png is a tiger cat (282) to the default model');
  assert.equal(reference.width, 451);
  for (const [name, r] of Object.entries(results)) {
    assert.equal(r.classIdx, reference.classIdx, `${name}: the same class`);
    assert.equal(r.width, reference.width, `${name}: the same map size`);
    assert.ok(Math.abs(r.sum - reference.sum) <= 1e-3 * reference.sum, `${name}: the same heatmap (sum ${r.sum} vs ${reference.sum})`);
  }
});
