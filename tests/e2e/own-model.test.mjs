// End-to-end: a user brings their own model to the demo page, as files picked together:
//   1. an ONNX file alone whose weights live in <name>.onnx.data -> a clear error that names the file to add;
//   2. the .onnx with its .onnx.data -> the family ('onnx'), input size and default layer are shown,
//      and the photo on the page is explained with the new model;
//   3. a labels file (.txt, one name per line) -> the result names the class by its label.
// The fixture is a small torchvision-style network exported by torch's dynamo exporter
// (scripts/gen-onnx-fixtures.py); nothing leaves the page (no request after the model is read).

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO, installResultLog, logLength, recordErrors, recordRequests, serveAndBrowse, waitForLog } from './harness.mjs';

const FIXTURES = join(REPO, 'tests/fixtures/onnx');

/** The first ONNX fixture that keeps its weights in a .onnx.data file beside it. */
function externalDataFixture() {
  const names = existsSync(FIXTURES) ? readdirSync(FIXTURES) : [];
  const onnx = names.filter((n) => n.endsWith('.onnx') && names.includes(`${n}.data`)).sort()[0];
  if (!onnx) throw new Error(`no .onnx with a .onnx.data beside it in ${FIXTURES}: run scripts/gen-onnx-fixtures.py`);
  return { onnx: join(FIXTURES, onnx), data: join(FIXTURES, `${onnx}.data`) };
}

const env = serveAndBrowse();

const modelInfo = (page) => page.locator('#model-info').textContent();

describe('your own model in the demo page', () => {
  let context;
  let page;
  let errors;
  let requests;
  const files = externalDataFixture();

  before(async () => {
    context = await env.browser.newContext({ viewport: { width: 1280, height: 900 } });
    page = await context.newPage();
    errors = recordErrors(page);
    requests = recordRequests(context, page);
    await page.goto(env.server.url);
    await page.waitForFunction(() => /ready in/.test(document.querySelector('#model-info').textContent), null, { timeout: 45000, polling: 50 });
    await page.waitForSelector('.tile[data-tile="guided-gradcam"].is-ready:not(.is-pending)', { timeout: 30000 });
    await installResultLog(page);
    requests.phase = 'own-model';
  });

  after(async () => {
    await context?.close();
  });

  test('an .onnx without its .onnx.data says which file to add, and the page stays usable', async () => {
    await page.setInputFiles('#model-input', [files.onnx]);
    await page.waitForFunction(() => /could not be loaded/.test(document.querySelector('#result-title').textContent), null, { timeout: 30000, polling: 50 });
    const status = await page.locator('#status').textContent();
    assert.match(status, /\.onnx\.data|external data/, `the error should name the missing weights file: "${status}"`);
  });

  test('the .onnx with its .onnx.data loads: family, input size and default layer shown, photo explained', async () => {
    const from = await logLength(page);
    await page.setInputFiles('#model-input', [files.onnx, files.data]);
    await page.waitForFunction(() => /ready in/.test(document.querySelector('#model-info').textContent) && /onnx/.test(document.querySelector('#model-info').textContent), null, {
      timeout: 45000,
      polling: 50,
    });
    const info = await modelInfo(page);
    assert.match(info, /: onnx, \d+ classes, input \d+×\d+;/, `model info should show the family, classes and input size: "${info}"`);
    assert.match(info, /default target \S+/, info);
    const entry = await waitForLog(page, from, { hasTiming: true }, 'the photo explained with the ONNX model', 45000);
    assert.match(entry.sub, /^class \d+ /, `the result should be a class of the new model: "${entry.sub}"`);
    console.log(`# own ONNX model: ${info} -> ${entry.title} (${entry.sub})`);
  });

  test('a labels file names the classes', async () => {
    const info = await modelInfo(page);
    const classes = Number(/(\d+) classes/.exec(info)[1]);
    const dir = mkdtempSync(join(tmpdir(), 'gradcam-labels-'));
    const labels = join(dir, 'labels.txt');
    writeFileSync(labels, Array.from({ length: classes }, (_, i) => `my-class-${i}`).join('\n') + '\n');
    const from = await logLength(page);
    await page.setInputFiles('#model-input', [labels]);
    await page.waitForFunction(() => /class names from labels\.txt/.test(document.querySelector('#model-info').textContent), null, { timeout: 45000, polling: 50 });
    const entry = await waitForLog(page, from, { hasTiming: true, titleIncludes: 'my-class-' }, 'a result named by the labels file', 45000);
    console.log(`# labels: ${entry.title}`);
  });

  test('no request left the page while the user brought their model', async () => {
    const network = requests.during('own-model').filter((r) => !/^(blob|data):/.test(r.url));
    assert.deepEqual(network.map((r) => r.url), [], 'reading a model, its weights and labels from files must not touch the network');
    assert.deepEqual(errors.filter((e) => !/could not be loaded|external data|onnx\.data/.test(e)), []);
  });
});
