// Helpers for the end-to-end tests in this folder.
// Not a test file itself: node's runner only picks up *.test.mjs here.

import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { existsSync, mkdirSync } from 'node:fs';
import { after, before } from 'node:test';
import { fileURLToPath } from 'node:url';
import { resolve } from 'node:path';
import { chromium } from 'playwright-core';

export const REPO = resolve(fileURLToPath(new URL('../..', import.meta.url)));
export const ARTIFACTS = resolve(REPO, 'test-artifacts/e2e');
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--enable-unsafe-webgpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];

export function artifactsDir() {
  mkdirSync(ARTIFACTS, { recursive: true });
  return ARTIFACTS;
}

function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.unref();
    s.on('error', fail);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

/**
 * Starts www/serve.mjs on a free port; resolves once it prints its "Serving" line.
 * `dir`: the folder to serve, relative to the repository (default the repository itself; 'dist' for the webpack build).
 * `extraArgs`: more serve.mjs flags (--allow-host NAME, ...).
 */
export async function startServer({ attempts = 3, dir = '.', extraArgs = [] } = {}) {
  let lastError;
  for (let i = 0; i < attempts; i++) {
    const port = await freePort();
    // The tests' own pages, fixtures and written files are not part of the site: serve.mjs serves them only when told.
    const allow = dir === '.' ? ['--allow', 'tests/e2e', '--allow', 'tests/fixtures', '--allow', 'test-artifacts/e2e'] : [];
    const child = spawn(process.execPath, ['www/serve.mjs', dir, '--port', String(port), '--host', '127.0.0.1', ...allow, ...extraArgs], {
      cwd: REPO,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    try {
      await new Promise((ok, fail) => {
        const timer = setTimeout(() => fail(new Error(`www/serve.mjs did not start within 10 s; output:\n${output}`)), 10000);
        const onData = (d) => {
          output += d;
          if (/Serving .* at http/.test(output)) {
            clearTimeout(timer);
            ok();
          }
        };
        child.stdout.on('data', onData);
        child.stderr.on('data', (d) => (output += d));
        child.on('exit', (code) => {
          clearTimeout(timer);
          fail(new Error(`www/serve.mjs exited with code ${code} before serving; output:\n${output}`));
        });
      });
    } catch (e) {
      lastError = e;
      child.kill();
      continue; // the port was taken in between: try another one
    }
    child.removeAllListeners('exit');
    const killOnExit = () => child.kill();
    process.once('exit', killOnExit); // never leave the server behind, even when the run is aborted
    return {
      url: `http://127.0.0.1:${port}/`,
      child,
      stop: () =>
        new Promise((ok) => {
          if (child.exitCode !== null || child.signalCode !== null) return ok();
          child.once('exit', () => ok());
          child.kill('SIGTERM');
        }),
    };
  }
  throw lastError;
}

/** What the browser tests load: the built wasm package (scripts/build-web.sh) and the assets (scripts/setup.sh). */
const BUILT = ['pkg/gradcam_wasm.js', 'pkg/gradcam_wasm_bg.wasm', 'assets/models/efficientnet-lite0.safetensors', 'assets/samples/chelsea.png'];

/**
 * The hooks most test files need: before their tests, check that the package and the assets are
 * built (and the files in `needs`), run `prepare()` (e.g. build a site), start www/serve.mjs (`serverOptions`, see startServer)
 * and Chromium; after them, close both. Returns `env`, whose `server` and `browser` are set once the
 * `before` hook has run. `isolated: true` also starts the same site cross-origin isolated (COOP +
 * COEP, so SharedArrayBuffer and the threaded build), as `env.isolated`.
 */
export function serveAndBrowse({ serverOptions = {}, prepare = async () => {}, needs = [], isolated = false } = {}) {
  const env = { server: null, isolated: null, browser: null };
  before(async () => {
    for (const f of [...BUILT, ...needs]) {
      if (!existsSync(resolve(REPO, f))) throw new Error(`missing ${f}: run scripts/setup.sh (assets) and scripts/build-web.sh (pkg) first`);
    }
    artifactsDir();
    await prepare();
    const isolatedSite = isolated ? startServer({ ...serverOptions, extraArgs: [...(serverOptions.extraArgs || []), '--isolate'] }) : null;
    [env.server, env.isolated, env.browser] = await Promise.all([startServer(serverOptions), isolatedSite, launchBrowser()]);
  });
  after(async () => {
    await env.browser?.close().catch(() => {});
    await env.server?.stop();
    await env.isolated?.stop();
  });
  return env;
}

export function launchBrowser() {
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
}

/**
 * Records every request the context sees, from the page and from its workers, as
 * {url, source, phase}. `phase` is whatever `rec.phase` was when the request was issued.
 * Requests are keyed by their Request object so that one request seen by both listeners
 * counts once (source then says 'page+context').
 */
export function recordRequests(context, page) {
  const byRequest = new Map();
  const rec = {
    phase: 'startup',
    all: [],
    during(phase) {
      return rec.all.filter((r) => r.phase === phase);
    },
  };
  const add = (source) => (req) => {
    const seen = byRequest.get(req);
    if (seen) {
      if (!seen.source.includes(source)) seen.source += `+${source}`;
      return;
    }
    const entry = { url: req.url(), method: req.method(), type: req.resourceType(), source, phase: rec.phase };
    byRequest.set(req, entry);
    rec.all.push(entry);
  };
  page.on('request', add('page'));
  context.on('request', add('context'));
  return rec;
}

/** Console errors and uncaught exceptions of a page. */
export function recordErrors(page) {
  const errors = [];
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(`console.error: ${m.text()}`);
  });
  page.on('crash', () => errors.push('the page crashed'));
  return errors;
}

/**
 * Installs a log of what the result bar shows: one entry each time #timing changes, with
 * #result-title, #result-sub and #timing at that moment. showResult() writes title, sub and
 * timing together; setImage() clears #timing (an entry with timing '').
 */
export async function installResultLog(page) {
  await page.evaluate(() => {
    if (window.__e2eLog) return;
    const log = [];
    window.__e2eLog = log;
    const q = (s) => document.querySelector(s).textContent;
    const snap = () => log.push({ title: q('#result-title'), sub: q('#result-sub'), timing: q('#timing'), status: q('#status'), t: performance.now() });
    new MutationObserver(snap).observe(document.querySelector('#timing'), { childList: true, characterData: true, subtree: true });
  });
}

export function logLength(page) {
  return page.evaluate(() => window.__e2eLog.length);
}

/**
 * Does a log entry match `m`? Keys: title (exact), titleStartsWith, titleIncludes, subStartsWith,
 * hasTiming (true: #timing non-empty, false: cleared). Declarative on purpose: the page's CSP
 * forbids eval, so no predicate source can be compiled in the page.
 */
function matches(e, m) {
  if (m.title !== undefined && e.title !== m.title) return false;
  if (m.titleStartsWith !== undefined && !e.title.startsWith(m.titleStartsWith)) return false;
  if (m.titleIncludes !== undefined && !e.title.includes(m.titleIncludes)) return false;
  if (m.subStartsWith !== undefined && !e.sub.startsWith(m.subStartsWith)) return false;
  if (m.hasTiming !== undefined && (e.timing !== '') !== m.hasTiming) return false;
  return true;
}

/**
 * Waits until an entry at index >= `from` matches `m` (see matches()) and returns it with its
 * `index`. On timeout the error shows every update that did come.
 */
export async function waitForLog(page, from, m, what, timeout = 30000) {
  const t0 = Date.now();
  let seen = [];
  for (;;) {
    seen = await page.evaluate((from) => window.__e2eLog.slice(from), from);
    const i = seen.findIndex((e) => matches(e, m));
    if (i >= 0) return { ...seen[i], index: from + i };
    if (Date.now() - t0 > timeout) break;
    await new Promise((r) => setTimeout(r, 40));
  }
  const now = await page
    .evaluate(() => ({ title: document.querySelector('#result-title').textContent, status: document.querySelector('#status').textContent }))
    .catch(() => ({}));
  throw new Error(`timed out after ${timeout} ms waiting for ${what}.\nresult-bar updates since: ${JSON.stringify(seen, null, 1)}\nnow: ${JSON.stringify(now)}`);
}

/**
 * Mean of (R - B) over the left and the right half of #overlay-canvas, plus a cheap hash of
 * all its pixels (to see that it changed) and its size.
 */
export function canvasStats(page, selector = '#overlay-canvas') {
  return page.evaluate((selector) => {
    const c = document.querySelector(selector);
    const { width: w, height: h } = c;
    const d = c.getContext('2d').getImageData(0, 0, w, h).data;
    const half = Math.floor(w / 2);
    let left = 0;
    let right = 0;
    let nl = 0;
    let nr = 0;
    let hash = 2166136261;
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const i = 4 * (y * w + x);
        const rb = d[i] - d[i + 2];
        if (x < half) {
          left += rb;
          nl++;
        } else if (x >= w - half) {
          right += rb;
          nr++;
        }
        hash = Math.imul(hash ^ d[i], 16777619) ^ Math.imul(d[i + 1], 31) ^ Math.imul(d[i + 2], 961);
      }
    }
    return { width: w, height: h, left: left / nl, right: right / nr, hash: hash >>> 0 };
  }, selector);
}

/** Waits until the pixels of the canvas differ from `before` (a canvasStats result). */
export async function waitForCanvasChange(page, before, what, timeout = 30000) {
  const t0 = Date.now();
  for (;;) {
    const now = await canvasStats(page);
    if (now.hash !== before.hash) return now;
    if (Date.now() - t0 > timeout) throw new Error(`the canvas did not change after ${what} (waited ${timeout} ms)`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export const round = (x, d = 1) => Math.round(x * 10 ** d) / 10 ** d;
