// Batches split across workers on a page that is not cross-origin isolated (issue 17, src/tape.rs):
// a GradcamClient loaded with workers: 2 gives bitwise the results of one loaded with workers: 1 for
// Score-CAM over 64 channels, Integrated Gradients and evaluate's curves; its second worker starts with
// load(), with the model bytes of the first (no second download: requests counted);
// progress adds up over the shards; an abort mid-run rejects and the next call works; a shard worker
// that dies mid-call leaves the call answered (in one worker) and the next call sharded again.
//   node --test tests/e2e/shards.test.mjs

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { recordErrors, recordRequests, serveAndBrowse } from './harness.mjs';

const env = serveAndBrowse();
const MODEL = 'efficientnet-lite0.safetensors';

/** A page (its own context, so its requests are its own) with clients of 1 and 2 workers. */
async function openPage() {
  const context = await env.browser.newContext();
  const page = await context.newPage();
  const errors = recordErrors(page);
  const requests = recordRequests(context, page);
  await page.goto(new URL('tests/e2e/blank.html', env.server.url).href);
  requests.phase = 'load';
  await page.evaluate(async () => {
    const { GradcamClient, toImageData } = await import('/www/gradcam-client.js');
    // The plain SIMD build in both (relaxed SIMD may round differently from it).
    window.one = new GradcamClient();
    await one.load('/assets/models/efficientnet-lite0.safetensors', { relaxedSimd: false, workers: 1 });
    window.two = new GradcamClient();
    await two.load('/assets/models/efficientnet-lite0.safetensors', { relaxedSimd: false, workers: 2 });
    window.img = await toImageData('/assets/samples/chelsea.png');
    window.bits = (a) => Array.from(new Uint32Array(Float32Array.from(a).buffer));
    window.same = (a, b) => a.length === b.length && a.every((v, i) => v === b[i]);
  });
  return { page, errors, requests, context };
}

const modelRequests = (requests, phase) => requests.during(phase).filter((r) => r.url.includes(MODEL)).length;

test('workers: 2 gives the results of workers: 1 bit for bit, with one download of the model', async () => {
  const { page, errors, requests, context } = await openPage();
  assert.ok(modelRequests(requests, 'load') <= 2, 'each client loads the model once (the second from the Cache API or the network)');
  requests.phase = 'sharded';
  const out = await page.evaluate(async () => {
    const info = { one: one.model.workers, two: two.model.workers, shardsBefore: two._shards.length, isolated: crossOriginIsolated };
    const progress = [];
    const score = { method: 'scorecam', scoreCamChannels: 64 };
    const s1 = await one.explain(img, null, score);
    const s2 = await two.explain(img, null, score, (done, total) => progress.push([done, total]));
    const ig = { method: 'integrated-gradients', igSteps: 16 };
    const [i1, i2] = [await one.explain(img, null, ig), await two.explain(img, null, ig)];
    const ev = { method: 'gradcam', steps: 20 };
    const [e1, e2] = [await one.evaluate(img, null, ev), await two.evaluate(img, null, ev)];
    // An evaluate of Score-CAM records in two rounds: the map's calls, then the curves that follow it.
    const evs = { method: 'scorecam', scoreCamChannels: 16, steps: 10 };
    const [f1, f2] = [await one.evaluate(img, null, evs), await two.evaluate(img, null, evs)];
    const curves = (e) => bits([...e.deletion.scores, ...e.insertion.scores, e.deletion.auc, e.insertion.auc]);
    return {
      ...info,
      shardsAfter: two._shards.length,
      scoreCam: { same: same(bits(s1.heatmap), bits(s2.heatmap)), nonzero: s1.heatmap.some((v) => v !== 0), cls: [s1.classIdx, s2.classIdx] },
      ig: { same: same(bits(i1.heatmap), bits(i2.heatmap)) && same(bits(i1.rgb), bits(i2.rgb)), nonzero: i1.heatmap.some((v) => v !== 0) },
      curves: { same: same(curves(e1), curves(e2)), points: e1.deletion.scores.length, varied: new Set(e1.deletion.scores).size > 2 },
      scoreCamCurves: { same: same(curves(f1), curves(f2)) && same(bits(f1.heatmap || []), bits(f2.heatmap || [])) },
      progress,
    };
  });
  assert.deepEqual([out.one, out.two, out.isolated], [1, 2, false]);
  assert.equal(out.shardsBefore, 1, 'the shard worker started with load()');
  assert.equal(out.shardsAfter, 1);
  assert.ok(out.scoreCam.same && out.scoreCam.nonzero, JSON.stringify(out.scoreCam));
  assert.ok(out.ig.same && out.ig.nonzero, JSON.stringify(out.ig));
  assert.ok(out.curves.same && out.curves.points === 21 && out.curves.varied, JSON.stringify(out.curves));
  assert.ok(out.scoreCamCurves.same, 'Score-CAM evaluate, sharded in two rounds');
  // Progress adds the shards' channels up: it never goes back and ends at 64 of 64.
  const dones = out.progress.map((p) => p[0]);
  assert.ok(dones.every((d, i) => i === 0 || d >= dones[i - 1]), JSON.stringify(out.progress));
  assert.deepEqual(out.progress.at(-1), [64, 64]);
  assert.equal(modelRequests(requests, 'sharded'), 0, 'the shard worker got the bytes from the first worker, not the network');
  assert.deepEqual(requests.during('sharded'), [], 'no request at all while explaining: the shard worker started with load()');
  assert.deepEqual(errors, []);
  await context.close();
});

test('an abort stops every shard and the next call works; a shard worker that dies leaves the call answered', async () => {
  const { page, errors, requests, context } = await openPage();
  requests.phase = 'sharded';
  const out = await page.evaluate(async () => {
    const score = { method: 'scorecam', scoreCamChannels: 64 };
    const reference = await one.explain(img, null, score);
    // Abort a Score-CAM over all 1280 channels at its first progress.
    const ac = new AbortController();
    let error = null;
    try {
      await two.explain(img, null, { method: 'scorecam', signal: ac.signal }, () => ac.abort());
    } catch (e) {
      error = e.name;
    }
    const afterAbort = await two.explain(img, null, score);
    // Kill the shard worker mid-call, as a crash would (its 'error' event makes the client call _workerDied).
    const shard = two._shards[0];
    const killed = shard.worker;
    let killedAt = null;
    const whileKilled = await two.explain(img, null, score, (done) => {
      if (killedAt === null) {
        killedAt = done;
        killed.terminate();
        shard._workerDied('was killed by the test');
      }
    });
    const next = await two.explain(img, null, score);
    return {
      error,
      afterAbort: same(bits(afterAbort.heatmap), bits(reference.heatmap)),
      whileKilled: same(bits(whileKilled.heatmap), bits(reference.heatmap)),
      killedAt,
      next: same(bits(next.heatmap), bits(reference.heatmap)),
      newShardWorker: two._shards[0].worker !== killed && two._shards[0] === shard,
    };
  });
  assert.equal(out.error, 'AbortError');
  assert.ok(out.afterAbort, 'the call after the abort gives the unsharded map');
  assert.ok(out.killedAt !== null && out.whileKilled, `the call whose shard died still answers, unsharded (${out.killedAt})`);
  assert.ok(out.next && out.newShardWorker, 'the next call runs sharded on a new shard worker');
  assert.equal(modelRequests(requests, 'sharded'), 0, 'the restarted shard reloads the bytes it holds');
  // The fallback's console.warn is expected; errors are not.
  assert.deepEqual(errors, []);
  await context.close();
});

test('the wasm API: bad shards and bad tapes are clear errors; a replay answers from the tape alone', async () => {
  const { page, errors, context } = await openPage();
  const out = await page.evaluate(async () => {
    const m = await import('/pkg/gradcam_wasm.js');
    await m.default();
    const bytes = new Uint8Array(await (await fetch('/assets/models/efficientnet-lite0.safetensors')).arrayBuffer());
    const ex = new m.Explainer(bytes, {});
    const o = { method: 'scorecam', scoreCamChannels: 8, scoreCamBatch: 2 };
    const fail = async (p) => p.then(() => 'resolved', (e) => `${e instanceof Error}: ${e.message}`);
    const shards = [await ex.recordShardAsync('explain', img, undefined, o, 0, 2), await ex.recordShardAsync('explain', img, undefined, o, 1, 2)];
    const merged = {
      calls: Uint32Array.from([...shards[0].calls, ...shards[1].calls]),
      lengths: Uint32Array.from([...shards[0].lengths, ...shards[1].lengths]),
      data: Float32Array.from([...shards[0].data, ...shards[1].data]),
    };
    const replayed = await ex.replayAsync('explain', img, undefined, o, merged);
    const plain = await ex.explainAsync(img, undefined, o);
    return {
      counts: shards.map((s) => [s.calls.length, s.count, s.complete]),
      same: same(bits(replayed.heatmap), bits(plain.heatmap)),
      badShard: await fail(ex.recordShardAsync('explain', img, undefined, o, 2, 2)),
      badCall: await fail(ex.recordShardAsync('predict', img, undefined, o, 0, 2)),
      missing: await fail(ex.replayAsync('explain', img, undefined, o, shards[0])),
      malformed: await fail(ex.replayAsync('explain', img, undefined, o, { ...merged, lengths: merged.lengths.subarray(1) })),
      notArrays: await fail(ex.replayAsync('explain', img, undefined, o, { calls: [0], lengths: [1], data: [0] })),
      noTape: await fail(ex.replayAsync('explain', img, undefined, o, undefined)),
      shardsWell: ['scorecam', 'ig', 'occlusion', 'gradcam', 'saliency'].map((n) => m.shardsWell(n)),
    };
  });
  assert.deepEqual(out.counts, [[2, 4, true], [2, 4, true]]);
  assert.ok(out.same, 'the replay of the merged tapes is the computed map');
  assert.match(out.badShard, /^true: (\w+: )?shard 2 of 2 is not usable/);
  assert.match(out.badCall, /^true: the call to shard must be 'explain' or 'evaluate', got 'predict'/);
  assert.match(out.missing, /^true: (\w+: )?the tape has no answer for batched call 1/);
  assert.match(out.malformed, /^true: (\w+: )?a tape of 4 calls and 3 lengths is malformed/);
  assert.match(out.notArrays, /^true: tape.calls must be a Uint32Array/);
  assert.match(out.noTape, /^true: replayAsync needs the merged tape/);
  assert.deepEqual(out.shardsWell, [true, true, true, false, false]);
  assert.deepEqual(errors, []);
  await context.close();
});
