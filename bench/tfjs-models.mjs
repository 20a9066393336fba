// The benchmark's peer: the four architectures of src/arch/ rebuilt in TensorFlow.js (NHWC), loading
// the same safetensors weights, and Grad-CAM / Guided Grad-CAM / Score-CAM computed with tf.grad.
//
// Mirrors src/arch exactly: torchvision NCHW weights -> TF.js layouts (conv HWIO, depthwise [kh, kw, C, 1],
// linear [in, out]), batch-norm folded into the conv the same way
// (W' = W * s, b' = (b - mean) * s + beta, s = gamma / sqrt(var + eps); eps 1e-5, 1e-3 for EfficientNet-Lite0),
// symmetric torchvision padding (k / 2) or TF "SAME" (EfficientNet-Lite0), the same target layers
// (`explainer.defaultLayer()`): ResNet `layer4`, MobileNetV2 `features.18`, EfficientNet-Lite0 `_conv_head.act`,
// VGG `features.29` (its last ReLU before the last max pool).
//
// Each network is split at the target layer into trunk(x) -> A and head(A) -> logits, both written
// once over an `ops` object: 'fast' (fused conv + bias + activation, used where no gradient flows
// through: the trunk of Grad-CAM and Score-CAM), 'plain' (separate conv / matMul, add, activation: TF.js's
// own gradients, input gradients only: the head under tf.grad) and 'guided' (the same with guided ReLU /
// ReLU6 through tf.customGrad: the
// gradient passes where the unit was active and the incoming gradient is positive).

const IMAGENET_MEAN = [0.485, 0.456, 0.406];
const IMAGENET_STD = [0.229, 0.224, 0.225];

/** Default Grad-CAM layer per architecture, as `Arch::default_layer`. */
export const TARGET_LAYER = {
  efficientnet_lite0: '_conv_head.act',
  resnet18: 'layer4',
  mobilenet_v2: 'features.18',
  vgg16: 'features.29',
};

// ------------------------------------------------------------------ weights -> TF.js tensors

function convParams(tf, st, name, bn, eps, depthwise) {
  const w = st.get(`${name}.weight`);
  const [cout, cinPerGroup, kh, kw] = w.shape;
  const bias = st.has(`${name}.bias`) ? st.get(`${name}.bias`).data : new Float32Array(cout);
  const W = w.data;
  if (bn) {
    const gamma = st.get(`${bn}.weight`).data;
    const beta = st.get(`${bn}.bias`).data;
    const mean = st.get(`${bn}.running_mean`).data;
    const vr = st.get(`${bn}.running_var`).data;
    const per = W.length / cout;
    for (let o = 0; o < cout; o++) {
      const s = Math.fround(gamma[o] / Math.fround(Math.sqrt(Math.fround(vr[o] + eps))));
      for (let i = o * per; i < (o + 1) * per; i++) W[i] = Math.fround(W[i] * s);
      bias[o] = Math.fround(Math.fround(bias[o] - mean[o]) * s + beta[o]);
    }
  }
  if (depthwise && cinPerGroup !== 1) throw new Error(`'${name}' is not a depthwise conv: weight ${w.shape}`);
  return { W, bias, cout, cinPerGroup, kh, kw };
}

/** torchvision conv weight [cout, cin, kh, kw] -> HWIO [kh, kw, cin, cout]. */
function toHWIO(W, cout, cin, kh, kw) {
  const out = new Float32Array(W.length);
  for (let o = 0; o < cout; o++)
    for (let c = 0; c < cin; c++)
      for (let i = 0; i < kh; i++)
        for (let j = 0; j < kw; j++) out[((i * kw + j) * cin + c) * cout + o] = W[((o * cin + c) * kh + i) * kw + j];
  return out;
}

/** torchvision depthwise weight [C, 1, kh, kw] -> [kh, kw, C, 1]. */
function toDepthwise(W, C, kh, kw) {
  const out = new Float32Array(W.length);
  for (let c = 0; c < C; c++)
    for (let i = 0; i < kh; i++) for (let j = 0; j < kw; j++) out[(i * kw + j) * C + c] = W[(c * kh + i) * kw + j];
  return out;
}

class Weights {
  constructor(tf, st) {
    this.tf = tf;
    this.st = st;
    this.convs = new Map();
    this.linears = new Map();
  }
  /** A conv layer: `pad` is a number (symmetric, torchvision) or 'same' (TF SAME). */
  conv(name, bn, { stride = 1, pad = 0, eps = 1e-5, depthwise = false } = {}) {
    const tf = this.tf;
    const p = convParams(tf, this.st, name, bn, eps, depthwise);
    let filter;
    if (depthwise) filter = tf.tensor4d(toDepthwise(p.W, p.cout, p.kh, p.kw), [p.kh, p.kw, p.cout, 1]);
    else filter = tf.tensor4d(toHWIO(p.W, p.cout, p.cinPerGroup, p.kh, p.kw), [p.kh, p.kw, p.cinPerGroup, p.cout]);
    const layer = { name, filter, bias: tf.tensor1d(p.bias), stride, pad, depthwise };
    this.convs.set(name, layer);
    return layer;
  }
  /** A linear layer, weights transposed to [in, out]; `permuteFrom` = [C, H, W] also reorders the
   * input features from torchvision's NCHW flatten (c, h, w) to NHWC's (h, w, c).
   * (Not kept [out, in] with transposeB: TF.js 4.22's wasm _FusedMatMul with transposeB and a bias
   * returns wrong values, max abs error ~95 on a 1x1280 @ 1280x1000 test; without the bias it is right.) */
  linear(name, permuteFrom = null) {
    const tf = this.tf;
    const w = this.st.get(`${name}.weight`);
    const [out, inp] = w.shape;
    const W = w.data;
    const T = new Float32Array(W.length);
    if (permuteFrom) {
      const [C, H, Wd] = permuteFrom;
      const hw = H * Wd;
      for (let o = 0; o < out; o++) {
        const row = o * inp;
        for (let c = 0; c < C; c++) for (let s = 0; s < hw; s++) T[(s * C + c) * out + o] = W[row + c * hw + s];
      }
    } else {
      for (let o = 0; o < out; o++) for (let i = 0; i < inp; i++) T[i * out + o] = W[o * inp + i];
    }
    const layer = { name, weight: tf.tensor2d(T, [inp, out]), bias: tf.tensor1d(this.st.get(`${name}.bias`).data) };
    this.linears.set(name, layer);
    return layer;
  }
  dispose() {
    for (const l of this.convs.values()) this.tf.dispose([l.filter, l.bias]);
    for (const l of this.linears.values()) this.tf.dispose([l.weight, l.bias]);
  }
}

// ------------------------------------------------------------------ ops in three modes

function guidedUnit(tf, upper) {
  // Gradient passes iff lower < x < upper (ReLU: upper = Infinity) and the incoming gradient > 0.
  return tf.customGrad((x, save) => {
    save([x]);
    const value = upper === Infinity ? tf.relu(x) : tf.relu6(x);
    return {
      value,
      gradFunc: (dy, [xs]) => {
        let pass = tf.greater(xs, 0);
        if (upper !== Infinity) pass = tf.logicalAnd(pass, tf.less(xs, upper));
        return tf.where(tf.logicalAnd(pass, tf.greater(dy, 0)), dy, tf.zerosLike(dy));
      },
    };
  });
}

export function makeOps(tf) {
  const gRelu = guidedUnit(tf, Infinity);
  const gRelu6 = guidedUnit(tf, 6);
  const act = (mode, x, a) => {
    if (!a) return x;
    if (mode === 'guided') return a === 'relu' ? gRelu(x) : gRelu6(x);
    return a === 'relu' ? tf.relu(x) : tf.relu6(x);
  };
  const make = (mode) => ({
    mode,
    conv(x, l, a = null) {
      if (mode === 'fast') {
        // Fused conv + bias (+ activation): TF.js's fastest inference form.
        const args = { x, filter: l.filter, strides: l.stride, pad: l.pad, bias: l.bias, activation: a || 'linear' };
        return l.depthwise ? tf.fused.depthwiseConv2d(args) : tf.fused.conv2d(args);
      }
      // Under a gradient, separate ops: the fused ops' gradient computes the filter and bias gradients
      // too (eagerly), the plain ones only what is asked for (the input gradient).
      const y = l.depthwise ? tf.depthwiseConv2d(x, l.filter, l.stride, l.pad) : tf.conv2d(x, l.filter, l.stride, l.pad);
      return act(mode, tf.add(y, l.bias), a);
    },
    linear(x, l, a = null) {
      if (mode === 'fast') return tf.fused.matMul({ a: x, b: l.weight, bias: l.bias, activation: a || 'linear' });
      return act(mode, tf.add(tf.matMul(x, l.weight), l.bias), a);
    },
    act: (x, a) => act(mode, x, a),
    add: (x, y) => tf.add(x, y),
    maxPool: (x, k, s, p) => tf.maxPool(x, k, s, p),
    gap: (x) => tf.mean(x, [1, 2]),
    flatten: (x) => tf.reshape(x, [x.shape[0], -1]),
  });
  return { fast: make('fast'), plain: make('plain'), guided: make('guided') };
}

// ------------------------------------------------------------------ architectures

function efficientnetLite0(w) {
  const stages = [[1, 1], [2, 2], [2, 2], [3, 2], [3, 1], [4, 2], [1, 1]];
  const eps = 1e-3;
  const stem = w.conv('_conv_stem', '_bn0', { stride: 2, pad: 'same', eps });
  const blocks = [];
  let i = 0;
  let cin = stem.filter.shape[3];
  for (const [repeats, stride] of stages) {
    for (let r = 0; r < repeats; r++) {
      const p = `_blocks.${i}`;
      const s = r === 0 ? stride : 1;
      const expand = w.st.has(`${p}._expand_conv.weight`) ? w.conv(`${p}._expand_conv`, `${p}._bn0`, { pad: 'same', eps }) : null;
      const dw = w.conv(`${p}._depthwise_conv`, `${p}._bn1`, { stride: s, pad: 'same', eps, depthwise: true });
      const proj = w.conv(`${p}._project_conv`, `${p}._bn2`, { pad: 'same', eps });
      const cout = proj.filter.shape[3];
      blocks.push({ expand, dw, proj, skip: s === 1 && cout === cin });
      cin = cout;
      i++;
    }
  }
  const head = w.conv('_conv_head', '_bn1', { pad: 'same', eps });
  const fc = w.linear('_fc');
  return {
    trunk(o, x) {
      x = o.conv(x, stem, 'relu6');
      for (const b of blocks) {
        let y = x;
        if (b.expand) y = o.conv(y, b.expand, 'relu6');
        y = o.conv(y, b.dw, 'relu6');
        y = o.conv(y, b.proj);
        x = b.skip ? o.add(x, y) : y;
      }
      return o.conv(x, head, 'relu6'); // _conv_head.act
    },
    head: (o, a) => o.linear(o.gap(a), fc),
  };
}

function resnet18(w) {
  const stem = w.conv('conv1', 'bn1', { stride: 2, pad: 3 });
  const blocks = [];
  for (let layer = 1; layer <= 4; layer++) {
    for (let i = 0; i < 2; i++) {
      const name = `layer${layer}.${i}`;
      const stride = layer > 1 && i === 0 ? 2 : 1;
      blocks.push({
        c1: w.conv(`${name}.conv1`, `${name}.bn1`, { stride, pad: 1 }),
        c2: w.conv(`${name}.conv2`, `${name}.bn2`, { pad: 1 }),
        down: w.st.has(`${name}.downsample.0.weight`) ? w.conv(`${name}.downsample.0`, `${name}.downsample.1`, { stride, pad: 0 }) : null,
      });
    }
  }
  const fc = w.linear('fc');
  return {
    trunk(o, x) {
      x = o.conv(x, stem, 'relu');
      x = o.maxPool(x, 3, 2, 1);
      for (const b of blocks) {
        let y = o.conv(x, b.c1, 'relu');
        y = o.conv(y, b.c2);
        const s = b.down ? o.conv(x, b.down) : x;
        x = o.act(o.add(y, s), 'relu');
      }
      return x; // layer4
    },
    head: (o, a) => o.linear(o.gap(a), fc),
  };
}

function mobilenetV2(w) {
  const strides = [1, 2, 1, 2, 1, 1, 2, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1];
  const stem = w.conv('features.0.0', 'features.0.1', { stride: 2, pad: 1 });
  let cin = stem.filter.shape[3];
  const blocks = strides.map((stride, i) => {
    const name = `features.${i + 1}`;
    const expands = w.st.has(`${name}.conv.3.weight`);
    const part = expands ? 1 : 0;
    const expand = expands ? w.conv(`${name}.conv.0.0`, `${name}.conv.0.1`, { pad: 0 }) : null;
    const k = w.st.shape(`${name}.conv.${part}.0.weight`)[2];
    const dw = w.conv(`${name}.conv.${part}.0`, `${name}.conv.${part}.1`, { stride, pad: Math.floor(k / 2), depthwise: true });
    const proj = w.conv(`${name}.conv.${part + 1}`, `${name}.conv.${part + 2}`, { pad: 0 });
    const cout = proj.filter.shape[3];
    const b = { expand, dw, proj, skip: stride === 1 && cout === cin };
    cin = cout;
    return b;
  });
  const last = w.conv('features.18.0', 'features.18.1', { pad: 0 });
  const fc = w.linear('classifier.1');
  return {
    trunk(o, x) {
      x = o.conv(x, stem, 'relu6');
      for (const b of blocks) {
        let y = x;
        if (b.expand) y = o.conv(y, b.expand, 'relu6');
        y = o.conv(y, b.dw, 'relu6');
        y = o.conv(y, b.proj);
        x = b.skip ? o.add(x, y) : y;
      }
      return o.conv(x, last, 'relu6'); // features.18
    },
    head: (o, a) => o.linear(o.gap(a), fc),
  };
}

function vgg16(w) {
  // features: conv indices; a max pool follows wherever the next conv index skips one (as src/arch/vgg.rs).
  const idx = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28];
  const convs = idx.map((i, n) => ({
    layer: w.conv(`features.${i}`, null, { pad: 1 }),
    poolAfter: n + 1 === idx.length || idx[n + 1] > i + 2,
  }));
  const lastC = convs[convs.length - 1].layer.filter.shape[3];
  const fc0 = w.linear('classifier.0', [lastC, 7, 7]);
  const fc3 = w.linear('classifier.3');
  const fc6 = w.linear('classifier.6');
  return {
    trunk(o, x) {
      for (let n = 0; n < convs.length; n++) {
        x = o.conv(x, convs[n].layer, 'relu');
        if (n + 1 < convs.length && convs[n].poolAfter) x = o.maxPool(x, 2, 2, 0);
      }
      return x; // features.29: the last ReLU, before the last max pool
    },
    head(o, a) {
      // features.30 max pool -> 7x7; the adaptive average pool to 7x7 is then the identity.
      let x = o.flatten(o.maxPool(a, 2, 2, 0));
      x = o.linear(x, fc0, 'relu');
      x = o.linear(x, fc3, 'relu');
      return o.linear(x, fc6);
    },
  };
}

const BUILDERS = { efficientnet_lite0: efficientnetLite0, resnet18, mobilenet_v2: mobilenetV2, vgg16 };

// ------------------------------------------------------------------ the model and the methods

/**
 * Builds `arch` from safetensors `st` (see safetensors.mjs) on the current TF.js backend.
 * Returns { arch, layer, preprocess(imageData), logits(x), gradcam(x, c), guidedGradcam(x, c),
 *           scorecam(x, c, {channels, batch}), dispose() }; every method returns tensors.
 */
export function buildModel(tf, arch, st) {
  const build = BUILDERS[arch];
  if (!build) throw new Error(`no TF.js builder for ${arch}`);
  const w = new Weights(tf, st);
  const net = build(w);
  const ops = makeOps(tf);
  const centered = arch === 'efficientnet_lite0';
  const mean = tf.tensor1d(IMAGENET_MEAN);
  const std = tf.tensor1d(IMAGENET_STD);

  /** RGBA ImageData (already 224 x 224) -> [1, H, W, 3] network input, normalized as the Rust side. */
  const preprocess = (img) =>
    tf.tidy(() => {
      const rgb = tf.slice(tf.tensor3d(new Float32Array(img.data), [img.height, img.width, 4]), [0, 0, 0], [-1, -1, 3]);
      const x = centered ? tf.div(tf.sub(rgb, 127), 128) : tf.div(tf.sub(tf.div(rgb, 255), mean), std);
      return tf.expandDims(x, 0);
    });

  const camFrom = (A, g) =>
    tf.tidy(() => {
      const alpha = tf.mean(g, [1, 2], true); // [1, 1, 1, C]: spatial mean of the gradients
      return tf.relu(tf.sum(tf.mul(A, alpha), 3)); // [1, h, w]
    });

  /** Heatmap on the 224 x 224 input grid: bilinear (half-pixel centres), per-image min-max. */
  const project = (cam, h, w) =>
    tf.tidy(() => {
      const up = tf.squeeze(tf.image.resizeBilinear(tf.expandDims(cam, 3), [h, w], false, true), [0, 3]);
      const lo = tf.min(up);
      const range = tf.sub(tf.max(up), lo);
      return tf.div(tf.sub(up, lo), tf.maximum(range, 1e-12));
    });

  const classScore = (logits, c) => tf.squeeze(tf.slice(logits, [0, c], [1, 1]));

  return {
    arch,
    layer: TARGET_LAYER[arch],
    preprocess,
    logits: (x) => tf.tidy(() => net.head(ops.fast, net.trunk(ops.fast, x))),

    /** { logits, raw [h, w], heatmap [H, W] } */
    gradcam(x, c) {
      return tf.tidy(() => {
        const A = net.trunk(ops.fast, x);
        let logits = null;
        const grad = tf.grad((a) => {
          logits = tf.keep(net.head(ops.plain, a));
          return classScore(logits, c);
        })(A);
        const cam = camFrom(A, grad);
        return { logits, raw: tf.squeeze(cam, [0]), heatmap: project(cam, x.shape[1], x.shape[2]) };
      });
    },

    /** Guided backprop (guided ReLU/ReLU6 everywhere) times the bilinearly upsampled Grad-CAM.
     * One forward through the guided network, kept A; the Grad-CAM gradient re-runs only the head. */
    guidedGradcam(x, c) {
      return tf.tidy(() => {
        let A = null;
        const gx = tf.grad((input) => {
          const a = net.trunk(ops.guided, input);
          A = tf.keep(a);
          return classScore(net.head(ops.guided, a), c);
        })(x);
        const g = tf.grad((a) => classScore(net.head(ops.plain, a), c))(A);
        const cam = camFrom(A, g);
        tf.dispose(A);
        const up = tf.image.resizeBilinear(tf.expandDims(cam, 3), [x.shape[1], x.shape[2]], false, true); // [1, H, W, 1]
        const prod = tf.mul(gx, up); // [1, H, W, 3]
        const magnitude = tf.squeeze(tf.max(tf.abs(prod), 3), [0]);
        const lo = tf.min(magnitude);
        const heatmap = tf.div(tf.sub(magnitude, lo), tf.maximum(tf.sub(tf.max(magnitude), lo), 1e-12));
        return { raw: magnitude, heatmap, guided: prod };
      });
    },

    /** Score-CAM: the `channels` highest-variance channels of A (all when null), each upsampled
     * (align_corners=True), min-max normalized, masking the input; softmax over their class logits. */
    scorecam(x, c, { channels = null, batch = 16 } = {}) {
      const A = tf.tidy(() => net.trunk(ops.fast, x));
      const C = A.shape[3];
      const [H, W] = [x.shape[1], x.shape[2]];
      const keepIdx = tf.tidy(() => {
        if (!channels || channels >= C) return tf.range(0, C, 1, 'int32');
        const { variance } = tf.moments(A, [0, 1, 2]);
        return tf.topk(variance, channels).indices;
      });
      const n = keepIdx.shape[0];
      const masks = tf.tidy(() => {
        const sel = tf.gather(A, keepIdx, 3); // [1, h, w, n]
        const up = tf.squeeze(tf.image.resizeBilinear(sel, [H, W], true, false), [0]); // [H, W, n]
        const lo = tf.min(up, [0, 1]);
        const range = tf.sub(tf.max(up, [0, 1]), lo);
        const m = tf.where(tf.greater(range, 0), tf.div(tf.sub(up, lo), tf.maximum(range, 1e-30)), tf.zerosLike(up));
        return tf.expandDims(tf.transpose(m, [2, 0, 1]), 3); // [n, H, W, 1]
      });
      const scores = [];
      for (let s = 0; s < n; s += batch) {
        const b = Math.min(batch, n - s);
        scores.push(
          tf.tidy(() => {
            const masked = tf.mul(x, tf.slice(masks, [s, 0, 0, 0], [b, -1, -1, -1]));
            return tf.squeeze(tf.slice(net.head(ops.fast, net.trunk(ops.fast, masked)), [0, c], [b, 1]), [1]);
          }),
        );
      }
      const out = tf.tidy(() => {
        const weights = tf.softmax(tf.concat(scores, 0)); // [n]
        const sel = tf.gather(A, keepIdx, 3);
        const cam = tf.relu(tf.sum(tf.mul(sel, weights), 3)); // [1, h, w]
        return { raw: tf.squeeze(cam, [0]), heatmap: project(cam, H, W) };
      });
      tf.dispose([A, keepIdx, masks, ...scores]);
      return out;
    },

    dispose() {
      w.dispose();
      tf.dispose([mean, std]);
    },
  };
}
