// Generated from src/schema.rs by `cargo test --lib schema` (UPDATE_TS=1 rewrites it); do not edit.
export type Prediction = { classIdx: number, label: string, logit: number, probability: number, };
export type Timings = { preprocessMs: number, forwardMs: number, methodMs: number, projectMs: number, totalMs: number, 
/**
 * the forward pass of the previous call (same image, layer and preprocessing) was reused
 */
forwardReused: boolean, };
export type Geometry = { scaleX: number, scaleY: number, offsetX: number, offsetY: number, inputWidth: number, inputHeight: number, 
/**
 * the image's size
 */
width: number, height: number, };
export type Crop = { x: number, y: number, width: number, height: number, };
export type ExplainResultData = { 
/**
 * the map on the image's pixels, width x height, row-major (left out by the CLI, which writes it with --out)
 */
heatmap: Float32Array, width: number, height: number, 
/**
 * the map on its own grid (the layer's, or the network input's), rawWidth x rawHeight
 */
raw: Float32Array, rawWidth: number, rawHeight: number, 
/**
 * the explained class (for a weighted target: its heaviest class)
 */
classIdx: number, label: string, 
/**
 * the explained score: the class's logit (for a weighted target, the weighted sum of logits)
 */
logit: number, probability: number, method: string, methodLabel: string, layer: string, top5: Array<Prediction>, timings: Timings, 
/**
 * the executor that ran this explanation's forward and backward passes
 */
backend: 'cpu' | 'webgpu', warnings: Array<string>, geometry: Geometry, crop: Crop, forwardReused: boolean, 
/**
 * guided methods only: the gradient as RGB in [0, 1], 3 x rgbHeight x rgbWidth (network input grid)
 */
rgb?: Float32Array, rgbWidth?: number, rgbHeight?: number, };
export type Curve = { fractions: Array<number>, scores: Array<number>, 
/**
 * Trapezoid rule over the fractions (0 to 1).
 */
auc: number, };
export type ConfidenceChange = { 
/**
 * Y: the score of the input.
 */
original: number, 
/**
 * O: the score of the input multiplied by the [0, 1] map.
 */
kept: number, 
/**
 * max(0, Y - O) / Y (0 when Y is 0).
 */
drop: number, 
/**
 * Y < O.
 */
increase: boolean, };
export type Road = { percentages: Array<number>, 
/**
 * The score of the unmodified input.
 */
original: number, 
/**
 * Scores with the most relevant p% removed and imputed.
 */
morf: Array<number>, 
/**
 * Scores with the least relevant p% removed and imputed.
 */
lerf: Array<number>, 
/**
 * Mean over the percentages of (LeRF - MoRF) / 2 (higher is better).
 */
combined: number, };
export type BoundingBox = { x0: number, y0: number, x1: number, y1: number, 
/**
 * Pixels of the segment the box surrounds.
 */
pixels: number, };
export type EvaluateResult = { method: string, classIdx: number, label: string, probability: number, deletion: Curve, insertion: Curve, confidence: ConfidenceChange, 
/**
 * ROAD (only when asked for)
 */
road: Road | null, 
/**
 * the map's box at 15% of its maximum (largest 8-connected segment), on the image's pixels, inclusive
 */
box: BoundingBox | null, 
/**
 * the measurement's time (explanation included in JS; the curves alone in the CLI)
 */
ms: number, };
export type LayerInfo = { name: string, aliases: Array<string>, kind: string, 
/**
 * [channels, height, width] at the model's input size
 */
shape: [number, number, number], 
/**
 * the layer explained when none is named
 */
default: boolean, };
export type MethodNeeds = { layerGradient: boolean, guidedInputGradient: boolean, batchedForwards: boolean, classifierWeights: boolean, layerForwards: boolean, inputGradients: boolean, deconvInputGradient: boolean, fullGradient: boolean, };
export type Smoothing = { 
/**
 * `eigenSmooth`: CAMs that sum weighted feature maps
 */
eigen: boolean, 
/**
 * `augSmooth`: maps on the layer's grid
 */
aug: boolean, };
export type MethodInfo = { name: string, aliases: Array<string>, label: string, help: string, 
/**
 * where the map lives: the target layer's grid or the input's pixels
 */
grid: 'layer' | 'input', needs: MethodNeeds, 
/**
 * the map is the same for every class (it reads only the activations: Eigen-CAM, KPCA-CAM)
 */
classAgnostic: boolean, smoothing: Smoothing, 
/**
 * the `explain` options of its own that change its map (Integrated Gradients: igSteps, igBaseline; ...)
 */
options: Array<string>, };
export type Calibration = { adapter: string, chose: 'cpu' | 'webgpu', cpuMs: number, 
/**
 * null when WebGPU failed to explain
 */
webgpuMs: number | null, 
/**
 * reused from an earlier load rather than measured by this one
 */
cached: boolean, };
export type BackendInfo = { backend: 'cpu' | 'webgpu', requested: Backend, adapter: string | null, software: boolean, note: string, 
/**
 * how 'auto' chose between the CPU and this adapter, when it measured (or reused a measurement)
 */
calibration: Calibration | null, };
export type ProgressMessage = { phase: 'download' | 'method', done: number, total: number, };
/** every method's name and alias that `method` accepts */
export type MethodName = 'gradcam' | 'counterfactual' | 'counterfactual-gradcam' | 'gradcam-counterfactual' | 'guided-backprop' | 'guided-backpropagation' | 'guided-bp' | 'guided-gradcam' | 'deconvolution' | 'deconv' | 'deconvnet' | 'deconv-gradcam' | 'deconvolution-gradcam' | 'gradcam++' | 'gradcampp' | 'gradcamplusplus' | 'hirescam' | 'xgradcam' | 'layercam' | 'scorecam' | 'eigencam' | 'gradcam-elementwise' | 'gradcamelementwise' | 'eigengradcam' | 'kpcacam' | 'kpca' | 'cam' | 'classactivationmap' | 'ablationcam' | 'ablation' | 'saliency' | 'vanilla-gradient' | 'gradient' | 'input-x-gradient' | 'inputxgradient' | 'input*gradient' | 'gradient-x-input' | 'integrated-gradients' | 'ig' | 'integratedgradients' | 'smoothgrad' | 'smooth-grad' | 'occlusion' | 'fullgrad' | 'full-gradient';
/** the colormaps overlays are drawn with */
export type Colormap = 'turbo' | 'jet' | 'viridis' | 'inferno';
