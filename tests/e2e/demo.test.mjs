// End-to-end test of the demo page (index.html + www/demo.js) in headless Chromium:
//   npm run test:e2e        (= node --test tests/e2e/)
// Needs: pkg/ (scripts/build-web.sh), assets/ (scripts/setup.sh), playwright-core, Chromium at
// /usr/bin/chromium (or $CHROMIUM). Screenshots go to test-artifacts/e2e/.
//
// Privacy rule checked here: once the model is loaded (and the page's own start-up sample is
// shown), the page must not issue a single request while the user drops a photo and explains it
// with several classes, methods and colormaps. Requests are recorded from the page *and* from
// its workers (page.on('request') and context.on('request'); the test checks that the model
// download, which the worker makes, is seen, so worker requests cannot slip through). blob: and
// data: URLs are resolved inside the browser and never reach a network; they are listed but not
// counted as requests (the page creates none in this flow anyway). The photo is built inside the
// page from bytes handed over by the test, so building it needs no request either.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  REPO,
  artifactsDir,
  canvasStats,
  installResultLog,
  launchBrowser,
  logLength,
  recordErrors,
  recordRequests,
  round,
  startServer,
  waitForCanvasChange,
  waitForLog,
} from './harness.mjs';

const SAMPLES = join(REPO, 'assets/samples');
const CAT_CLASSES = [281, 282, 285]; // tabby, tiger cat, Egyptian cat
const ESPRESSO = 967;
const MARGIN = 15; // mean (R - B) difference between the halves, in 0..255 units, that counts as "clear"

let server;
let browser;

before(async () => {
  for (const f of ['pkg/gradcam_wasm.js', 'pkg/gradcam_wasm_bg.wasm', 'assets/models/efficientnet-lite0.safetensors', 'assets/samples/chelsea.png', 'assets/samples/coffee.png']) {
    if (!existsSync(join(REPO, f))) throw new Error(`missing ${f}: run scripts/setup.sh (assets) and scripts/build-web.sh (pkg) first`);
  }
  artifactsDir();
  [server, browser] = await Promise.all([startServer(), launchBrowser()]);
});

after(async () => {
  await browser?.close().catch(() => {});
  await server?.stop();
});

/** Opens the demo and waits for the model and for the start-up sample's explanation (and its strip). */
async function openDemo(page) {
  await page.goto(server.url);
  try {
    await page.waitForFunction(() => /ready in/.test(document.querySelector('#model-info').textContent), null, { timeout: 45000, polling: 50 });
  } catch {
    const s = await page.evaluate(() => ({ title: document.querySelector('#result-title').textContent, status: document.querySelector('#status').textContent }));
    throw new Error(`the model did not load within 45 s: title "${s.title}", status "${s.status}"`);
  }
  await page.waitForSelector('#top5 li[data-class]', { timeout: 30000 });
  // The Figure-1 strip is rendered after the main result: once it is ready the worker is idle.
  await page.waitForSelector('.tile[data-tile="guided-gradcam"].is-ready:not(.is-pending)', { timeout: 30000 });
  await installResultLog(page);
}

const text = (page, sel) => page.locator(sel).textContent();
const top5Classes = (page) => page.$$eval('#top5 li[data-class]', (lis) => lis.map((li) => Number(li.dataset.class)));

/**
 * The overlay is (1 - a) * photo + a * colour (a = #opacity), so the colour layer's own (R - B)
 * per half is recovered from the canvas and the photo's redness: the photo alone must not be
 * what tips the balance (coffee.png is redder than chelsea.png).
 */
async function heatOnly(page, s, photo) {
  const a = Number(await page.inputValue('#opacity'));
  return { a, left: (s.left - (1 - a) * photo.left) / a, right: (s.right - (1 - a) * photo.right) / a };
}

/** Shared checks of a finished result: backend, timing with a number, no error status. */
async function checkResultBar(page, entry, methodName) {
  assert.match(entry.timing, /\d+(\.\d+)? ms in total/, `#timing should hold a duration, got "${entry.timing}"`);
  if (methodName) assert.ok(entry.timing.includes(methodName), `#timing should name ${methodName}: "${entry.timing}"`);
  const backend = await text(page, '#backend');
  assert.match(backend, /CPU|WebGPU/, `#backend should say CPU or WebGPU, got "${backend}"`);
  const status = await text(page, '#status');
  const isError = await page.locator('#status').evaluate((n) => n.classList.contains('is-error'));
  assert.ok(!isError, `#status shows an error: "${status}"`);
  return backend;
}

/** Waits for the result of `cls` with the given method (display name) after log index `from`. */
function waitForResult(page, from, cls, methodName) {
  const m = { hasTiming: true, subStartsWith: `class ${cls} `, titleStartsWith: `${methodName} of “` };
  return waitForLog(page, from, m, `the ${methodName} result of class ${cls}`);
}

/**
 * Builds the cat | coffee composite inside the page (chelsea left, coffee right, each squeezed
 * to 224x224 in a 448x224 canvas), makes a PNG File of it and drops it on #drop-zone with a
 * synthetic DataTransfer: dragenter, dragover, drop, as a browser sends them.
 */
async function dropComposite(page) {
  const left = readFileSync(join(SAMPLES, 'chelsea.png')).toString('base64');
  const right = readFileSync(join(SAMPLES, 'coffee.png')).toString('base64');
  return page.evaluate(
    async ({ left, right }) => {
      const bitmap = (b64) => createImageBitmap(new Blob([Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))], { type: 'image/png' }));
      const [a, b] = await Promise.all([bitmap(left), bitmap(right)]);
      const canvas = document.createElement('canvas');
      canvas.width = 448;
      canvas.height = 224;
      const ctx = canvas.getContext('2d');
      ctx.drawImage(a, 0, 0, 224, 224);
      ctx.drawImage(b, 224, 0, 224, 224);
      const blob = await new Promise((ok) => canvas.toBlob(ok, 'image/png'));
      // The photo's own redness per half, for the report (the overlay is 50% photo, 50% heat).
      const px = ctx.getImageData(0, 0, 448, 224).data;
      const rb = [0, 0];
      for (let i = 0; i < px.length; i += 4) rb[(i / 4) % 448 < 224 ? 0 : 1] += px[i] - px[i + 2];
      const photo = { left: rb[0] / (224 * 224), right: rb[1] / (224 * 224) };
      const file = new File([blob], 'cat-coffee.png', { type: 'image/png' });
      const dt = new DataTransfer();
      dt.items.add(file);
      const zone = document.querySelector('#drop-zone');
      const fire = (type) => zone.dispatchEvent(new DragEvent(type, { bubbles: true, cancelable: true, composed: true, dataTransfer: dt }));
      fire('dragenter');
      const dragging = zone.classList.contains('is-dragging');
      const overAccepted = !fire('dragover'); // the page must preventDefault() dragover to allow the drop
      const dropHandled = !fire('drop');
      return { bytes: blob.size, photo, dragging, overAccepted, dropHandled, stillDragging: zone.classList.contains('is-dragging') };
    },
    { left, right },
  );
}

describe('desktop 1280x800: a dropped cat|coffee photo', () => {
  let context;
  let page;
  let requests;
  let errors;
  const measured = {};

  before(async () => {
    context = await browser.newContext({ viewport: { width: 1280, height: 800 }, deviceScaleFactor: 1 });
    page = await context.newPage();
    requests = recordRequests(context, page);
    errors = recordErrors(page);
    await openDemo(page);
    requests.phase = 'after-model-load';
  });

  after(async () => {
    await context?.close();
  });

  test('loads the model and explains the start-up sample', async () => {
    const info = await text(page, '#model-info');
    assert.match(info, /efficientnet-lite0\.safetensors: efficientnet_lite0, 1000 classes, input 224×224; [\d.]+ MB, downloaded, ready in/, `#model-info: "${info}"`);
    // The page is not cross-origin isolated here, so one thread: the relaxed-SIMD build in Chromium.
    assert.match(info, /CPU path: the relaxed-SIMD build, one thread\.$/, `#model-info: "${info}"`);
    const methods = await page.$$eval('#method option', (os) => os.map((o) => o.value));
    for (const m of ['gradcam', 'gradcam++', 'guided-gradcam']) assert.ok(methods.includes(m), `#method lacks ${m}: ${methods}`);
    const timing = await text(page, '#timing');
    assert.match(timing, /\d+(\.\d+)? ms in total/, `#timing: "${timing}"`);
    assert.match(await text(page, '#backend'), /CPU|WebGPU/);
  });

  test('the dropped composite is classified with the whole photo as network input', async () => {
    // Centre crop (the default) would keep only the middle 224 of the 512-wide resized composite,
    // cutting off most of both halves: choose the option that squeezes in the whole photo.
    const options = await page.$$eval('#preprocess option', (os) => os.map((o) => ({ value: o.value, label: o.textContent })));
    const resize = options.find((o) => o.value === 'resize');
    assert.ok(resize, `#preprocess offers no 'resize' (whole photo) option: ${JSON.stringify(options)}`);
    assert.equal(await page.inputValue('#preprocess'), 'crop', 'the default network input should be the centre crop');
    let from = await logLength(page);
    await page.selectOption('#preprocess', 'resize');
    await waitForLog(page, from, { hasTiming: true }, 'the start-up sample re-explained with the whole photo');

    from = await logLength(page);
    const drop = await dropComposite(page);
    assert.ok(drop.dragging, 'dragenter with a file should mark #drop-zone as is-dragging');
    assert.ok(drop.overAccepted, 'the page should accept dragover (preventDefault) so that a drop is allowed');
    assert.ok(drop.dropHandled, 'the page should handle the drop (preventDefault)');
    assert.ok(!drop.stillDragging, 'the drop should clear is-dragging');
    const reset = await waitForLog(page, from, { title: 'cat-coffee.png', hasTiming: false }, 'the dropped cat-coffee.png to replace the photo');
    const first = await waitForLog(page, reset.index + 1, { hasTiming: true, titleIncludes: '“' }, 'the first explanation of the dropped photo');
    await checkResultBar(page, first, 'Grad-CAM');

    const stats = await canvasStats(page);
    assert.deepEqual([stats.width, stats.height], [448, 224], '#overlay-canvas should have the dropped photo\'s size');
    const classes = await top5Classes(page);
    assert.equal(classes.length, 5, `#top5 should list 5 classes, got ${classes}`);
    measured.top5 = classes;
    measured.top1 = first.title;
    const labels = await page.$$eval('#top5 li[data-class] .name', (ns) => ns.map((n) => n.textContent));
    measured.photo = drop.photo;
    console.log(`# dropped composite (${drop.bytes} B PNG; the photo alone: R-B left ${round(drop.photo.left)} right ${round(drop.photo.right)}): top-5 ${labels.join(' | ')}; ${first.title}; ${first.timing}`);
    assert.ok(
      classes.includes(ESPRESSO) || classes.some((c) => CAT_CLASSES.includes(c)),
      `top-5 of a cat|coffee photo should hold espresso or a cat, got ${classes}`,
    );
  });

  test('a cat class puts the heat on the left half (cat)', async () => {
    const classes = await top5Classes(page);
    const cat = CAT_CLASSES.find((c) => classes.includes(c));
    const from = await logLength(page);
    let how;
    if (cat !== undefined) {
      how = `clicked #top5 li[data-class="${cat}"]`;
      await page.click(`#top5 li[data-class="${cat}"] button`);
    } else {
      how = 'typed 281 into #class-input';
      await page.fill('#class-input', '281');
      await page.click('#class-form button[type="submit"]');
    }
    const cls = cat ?? 281;
    const entry = await waitForResult(page, from, cls, 'Grad-CAM');
    await checkResultBar(page, entry, 'Grad-CAM');
    if (cat !== undefined) {
      assert.ok(await page.locator(`#top5 li[data-class="${cat}"]`).evaluate((li) => li.classList.contains('is-selected')), 'the clicked class should be marked selected');
    }
    const s = await canvasStats(page);
    const h = await heatOnly(page, s, measured.photo);
    measured.cat = { cls, ...s };
    console.log(`# class ${cls} (${how}): ${entry.title}; overlay R-B left ${round(s.left)} right ${round(s.right)}; heat layer alone left ${round(h.left)} right ${round(h.right)}`);
    assert.ok(s.left - s.right > MARGIN, `cat heat should lie on the left: mean R-B of the overlay left ${round(s.left)} vs right ${round(s.right)} (needs > ${MARGIN} more)`);
    assert.ok(h.left - h.right > MARGIN / h.a, `cat heat (photo removed) should lie on the left: left ${round(h.left)} vs right ${round(h.right)}`);
  });

  test('espresso (967, typed into #class-input) puts the heat on the right half', async () => {
    const from = await logLength(page);
    await page.fill('#class-input', String(ESPRESSO));
    await page.click('#class-form button[type="submit"]');
    const entry = await waitForResult(page, from, ESPRESSO, 'Grad-CAM');
    assert.ok(entry.title.includes('espresso'), `class 967 should be labelled espresso: "${entry.title}"`);
    await checkResultBar(page, entry, 'Grad-CAM');
    const s = await canvasStats(page);
    const h = await heatOnly(page, s, measured.photo);
    measured.espresso = s;
    console.log(`# class 967: ${entry.title}; overlay R-B left ${round(s.left)} right ${round(s.right)}; heat layer alone left ${round(h.left)} right ${round(h.right)}; ${entry.timing}`);
    assert.ok(s.right - s.left > MARGIN, `espresso heat should lie on the right: mean R-B of the overlay left ${round(s.left)} vs right ${round(s.right)} (needs > ${MARGIN} more)`);
    assert.ok(h.right - h.left > MARGIN / h.a, `espresso heat (photo removed) should lie on the right: left ${round(h.left)} vs right ${round(h.right)}`);
    assert.notEqual(s.hash, measured.cat.hash, 'the canvas should change between the cat and the espresso explanation');
  });

  test('switching method and colormap redraws the canvas and updates the result bar', async () => {
    let before = await canvasStats(page);
    for (const [value, name] of [['gradcam++', 'Grad-CAM++'], ['guided-gradcam', 'Guided Grad-CAM']]) {
      const from = await logLength(page);
      await page.selectOption('#method', value);
      const entry = await waitForResult(page, from, ESPRESSO, name);
      await checkResultBar(page, entry, name);
      const help = await text(page, '#method-help');
      assert.ok(help.length > 10, `#method-help should describe ${name}`);
      const s = await canvasStats(page);
      assert.notEqual(s.hash, before.hash, `the canvas should change when switching to ${name}`);
      console.log(`# ${name} of espresso: R-B left ${round(s.left)} right ${round(s.right)}; ${entry.timing}`);
      if (value === 'gradcam++') {
        measured.espressoPP = s;
        assert.ok(s.right - s.left > MARGIN, `Grad-CAM++ espresso heat should lie on the right: left ${round(s.left)} vs right ${round(s.right)}`);
      }
      before = s;
    }

    // Grad-CAM++ of the cat, too: another class with a non-default method.
    await page.selectOption('#method', 'gradcam++');
    let from = await logLength(page);
    await page.fill('#class-input', String(measured.cat.cls));
    await page.click('#class-form button[type="submit"]');
    const catPP = await waitForResult(page, from, measured.cat.cls, 'Grad-CAM++');
    await checkResultBar(page, catPP, 'Grad-CAM++');
    const c = await canvasStats(page);
    measured.catPP = c;
    console.log(`# Grad-CAM++ of class ${measured.cat.cls}: R-B left ${round(c.left)} right ${round(c.right)}`);
    assert.ok(c.left - c.right > MARGIN, `Grad-CAM++ cat heat should lie on the left: left ${round(c.left)} vs right ${round(c.right)}`);

    // Smoothing (Grad-CAM++ takes both kinds): each redraws the same class's map differently, and
    // 'none' brings the plain map back exactly.
    for (const value of ['eigen', 'aug']) {
      from = await logLength(page);
      await page.selectOption('#smoothing', value);
      await waitForResult(page, from, measured.cat.cls, 'Grad-CAM++');
      const sm = await waitForCanvasChange(page, c, `smoothing '${value}'`);
      console.log(`# Grad-CAM++ of class ${measured.cat.cls}, ${value} smoothing: R-B left ${round(sm.left)} right ${round(sm.right)}`);
      // (Eigen smoothing keeps the weighted maps' dominant pattern, so its contrast is weaker: seen 10 units.)
      assert.ok(sm.left > sm.right, `smoothed (${value}) cat heat should lean left: left ${round(sm.left)} vs right ${round(sm.right)}`);
    }
    from = await logLength(page);
    await page.selectOption('#smoothing', 'none');
    await waitForResult(page, from, measured.cat.cls, 'Grad-CAM++');
    const t0 = Date.now();
    let hash = (await canvasStats(page)).hash;
    while (hash !== c.hash && Date.now() - t0 < 10000) {
      await page.waitForTimeout(100);
      hash = (await canvasStats(page)).hash;
    }
    assert.equal(hash, c.hash, "smoothing 'none' gives the plain map again");

    // Colormap: only the colour layer is redrawn (no new explanation, so #timing stays).
    before = c;
    from = await logLength(page);
    const timingBefore = await text(page, '#timing');
    await page.selectOption('#colormap', 'viridis');
    const v = await waitForCanvasChange(page, before, 'choosing the viridis colormap');
    assert.ok(await page.locator('#colorbar').evaluate((n) => n.classList.contains('cm-viridis')), 'the colour bar should show viridis');
    assert.equal(await text(page, '#timing'), timingBefore, 'a colormap change should not recompute the explanation');
    measured.viridis = v;
    console.log(`# viridis: R-B left ${round(v.left)} right ${round(v.right)} (jet: ${round(c.left)} / ${round(c.right)})`);

    // Back to Grad-CAM / jet for the screenshot.
    await page.selectOption('#colormap', 'jet');
    await waitForCanvasChange(page, v, 'choosing jet again');
    from = await logLength(page);
    await page.selectOption('#method', 'gradcam');
    await waitForResult(page, from, measured.cat.cls, 'Grad-CAM');
  });

  test('privacy: no request at all after the model is loaded', async () => {
    // The recorder sees worker requests: the model and the wasm are fetched by the worker.
    const model = requests.all.find((r) => r.url.endsWith('/assets/models/efficientnet-lite0.safetensors'));
    assert.ok(model, `the model download (made by the worker) was not recorded, so worker requests would go unseen:\n${requests.all.map((r) => r.url).join('\n')}`);
    assert.ok(model.source.includes('page'), `page.on('request') should see the worker's model request (seen by: ${model.source})`);
    // Whichever build the worker picked (www/thread-pool.js): the relaxed-SIMD one in Chromium here.
    assert.ok(requests.all.some((r) => /\/pkg\/((relaxed|threads)\/)?gradcam_wasm_bg\.wasm$/.test(r.url)), 'the wasm fetch was not recorded');

    const late = requests.during('after-model-load');
    const inBrowser = late.filter((r) => /^(blob|data):/.test(r.url));
    const network = late.filter((r) => !/^(blob|data):/.test(r.url));
    console.log(`# model request seen by ${model.source}; requests: ${requests.during('startup').length} while starting; after the model loaded: ${network.length} (plus ${inBrowser.length} blob:/data:)`);
    assert.deepEqual(
      network.map((r) => `${r.method} ${r.url} (${r.type}, seen by ${r.source})`),
      [],
      'requests were made after the model was loaded (while dropping and explaining the photo)',
    );
    assert.deepEqual(errors, [], 'the page logged errors');
  });

  test('desktop screenshot', async () => {
    await page.waitForSelector('.tile[data-tile="guided-gradcam"].is-ready:not(.is-pending)', { timeout: 30000 });
    await page.evaluate(() => window.scrollTo(0, 0)); // clicking the controls scrolled the page
    const dir = artifactsDir();
    await page.screenshot({ path: join(dir, 'desktop.png') });
    await page.screenshot({ path: join(dir, 'desktop-full.png'), fullPage: true });
  });
});

describe('phone 390x844: a photo chosen with #file-input', () => {
  let context;
  let page;
  let errors;

  before(async () => {
    context = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
    page = await context.newPage();
    errors = recordErrors(page);
    await openDemo(page);
  });

  after(async () => {
    await context?.close();
  });

  test('chelsea.png through the file input is explained as a cat', async () => {
    const from = await logLength(page);
    await page.setInputFiles('#file-input', join(SAMPLES, 'chelsea.png'));
    const reset = await waitForLog(page, from, { title: 'chelsea.png', hasTiming: false }, 'the chosen chelsea.png to replace the photo');
    const entry = await waitForLog(page, reset.index + 1, { hasTiming: true, titleIncludes: '“' }, 'the explanation of the chosen photo');
    const backend = await checkResultBar(page, entry, 'Grad-CAM');
    const s = await canvasStats(page);
    assert.deepEqual([s.width, s.height], [451, 300], '#overlay-canvas should have chelsea.png\'s own size');
    assert.equal(await page.locator('.sample.is-active').count(), 0, 'a chosen file is not one of the samples');
    const classes = await top5Classes(page);
    assert.ok(CAT_CLASSES.includes(classes[0]), `top-1 of chelsea.png should be a cat (281/282/285), got ${classes}`);
    assert.ok(entry.sub.startsWith(`class ${classes[0]} `), `the default explanation should be of the top-1 class: "${entry.sub}"`);
    console.log(`# phone, file input: ${entry.title} (${entry.sub}); top-5 ${classes}; ${entry.timing}; ${backend}`);
  });

  test('phone layout and screenshot', async () => {
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    assert.ok(overflow <= 0, `the page scrolls sideways on a phone by ${overflow} px`);
    await page.waitForSelector('.tile[data-tile="guided-gradcam"].is-ready:not(.is-pending)', { timeout: 30000 });
    const dir = artifactsDir();
    await page.screenshot({ path: join(dir, 'phone.png') });
    await page.screenshot({ path: join(dir, 'phone-full.png'), fullPage: true });
    assert.deepEqual(errors, [], 'the page logged errors');
  });
});
