// Types of www/gradcam-client.js: the promise API over the worker that hosts the Explainer. The
// shapes of options and results are the wasm package's (pkg/gradcam_wasm.d.ts).
import type { Backend, Colormap, EvaluateOptions, EvaluateResult, ExplainOptions, ExplainResult, LayerInfo, MethodInfo, MethodName, OverlayOptions, Prediction, BackendInfo, ProgressMessage } from '../pkg/gradcam_wasm.js';

export type { Backend, Colormap, EvaluateOptions, EvaluateResult, ExplainOptions, ExplainResult, LayerInfo, MethodInfo, MethodName, OverlayOptions, Prediction, BackendInfo, ProgressMessage };

/** The colormaps `overlay` and the element draw with (the Rust list: a test compares them). */
export declare const COLORMAPS: Colormap[];

export interface ClientOptions {
  /** A worker of your own running www/worker.js (it is not restarted after a trap). */
  worker?: Worker;
  /** Where worker.js is (default: beside this module). */
  workerUrl?: string | URL;
  /** Where gradcam_wasm_bg.wasm is (default: beside gradcam_wasm.js). */
  wasmUrl?: string | URL;
}

export interface LoadOptions {
  arch?: string;
  /** Class names: an array, or the text of a labels file (a JSON array or one name per line). */
  labels?: string[] | string;
  backend?: Backend;
  /** Subresource Integrity of the model: "sha256-<base64>" (sha384 and sha512 too). */
  integrity?: string;
  /** An ONNX model's external weights (<name>.onnx.data): a URL, bytes or a Blob. */
  externalData?: string | URL | ArrayBuffer | Uint8Array | Blob;
  externalDataIntegrity?: string;
  /** The square input size the network is fed. */
  inputSize?: number;
  /** Normalization on x / 255, three numbers each. */
  mean?: [number, number, number];
  std?: [number, number, number];
  /** The most memory one explanation may hold at once: its forward pass and its method's buffers. */
  memoryBudgetMiB?: number;
  /**
   * Threads for the CPU kernels: 'auto' (default: one per core on a cross-origin-isolated page,
   * else 1) or a number (1 takes the single-threaded build). The worker's first load decides.
   */
  threads?: 'auto' | number;
  /**
   * Whether a single-threaded page may run the relaxed-SIMD build (default true, where the engine
   * has relaxed SIMD: fused multiply-adds, about 10% faster). false keeps to the plain SIMD builds,
   * whose maps are the same on every CPU. The worker's first load decides.
   */
  relaxedSimd?: boolean;
  /**
   * With backend 'auto' on a WebGPU adapter: time one Grad-CAM on each backend and keep the faster,
   * once per model and adapter (kept in the Cache API; `model.backend.calibration` says what was
   * measured). Default: on hardware adapters; true: on software adapters too; false: take a
   * hardware adapter without measuring.
   */
  calibrate?: boolean;
  /**
   * Workers that share the long methods' batches (Score-CAM, Ablation-CAM, Integrated Gradients,
   * SmoothGrad, Occlusion, and `evaluate`): 1 (default) or 'auto' (one per core, at most 4, on a page
   * that is not cross-origin isolated; 1 where the threaded build runs) or a number up to 16. The
   * extra workers start with load(), each with its own copy of the model (no second
   * download), so each costs the model's memory again. Results are bitwise those of one worker.
   */
  workers?: 'auto' | number;
}

export interface LoadedModel {
  url: string | null;
  bytes: number;
  source: 'network' | 'cache' | 'memory';
  downloadMs: number;
  initMs: number;
  layers: LayerInfo[];
  /** every method `explain` accepts (`methodCatalog()`) */
  methods: MethodInfo[];
  defaultLayer: string;
  arch: string;
  inputSize: number;
  numClasses: number;
  backend: BackendInfo;
  /** Which wasm build runs (threaded on cross-origin-isolated pages), on how many threads, and why not a faster one. */
  build: { variant: 'threads-relaxed-simd' | 'threads' | 'relaxed-simd' | 'simd'; threads: number; note: string | null };
  /** How many workers the long methods' batches are split across (1: none; see `workers`). */
  workers: number;
  /** The method names and aliases whose batches are split (empty for a package without shards). */
  shardedMethods: string[];
}

export type Progress = (done: number, total: number) => void;

/** The detail of the client's 'progress' events: the worker's progress message and the call it belongs to. */
export interface ProgressDetail extends ProgressMessage {
  request: string | null;
}

/** Every call takes one: aborting rejects the call with a DOMException named 'AbortError' (docs/embedding.md). */
export interface Abortable {
  signal?: AbortSignal;
}

/** Any image a page holds; a string or URL is fetched (same origin, or served with CORS). */
export type ImageInput = ImageData | ImageBitmap | HTMLImageElement | HTMLCanvasElement | OffscreenCanvas | HTMLVideoElement | VideoFrame | Blob | string | URL;

/** The DOMException named 'AbortError' an aborted call rejects with (`cause`: the signal's reason). */
export declare function abortError(signal?: AbortSignal | null): DOMException;

/** The pixels of any image input, at its natural size. */
export declare function toImageData(image: ImageInput): Promise<ImageData>;

export declare class GradcamClient extends EventTarget {
  constructor(options?: ClientOptions);
  /** What `load` returned, or null before it (and after the worker died without a reload). */
  model: LoadedModel | null;
  /** A URL (downloaded in the worker, through the Cache API) or the model's bytes. */
  load(urlOrBytes: string | URL | ArrayBuffer | Uint8Array | Blob, options?: LoadOptions & Abortable, onProgress?: Progress | null): Promise<LoadedModel>;
  /** Explains `classIdx` (default: the top-1 class); `options.signal` aborts it (queued: skipped; running: stopped within a batch where the worker can see it). */
  explain(image: ImageInput, classIdx?: number | string | null, options?: ExplainOptions & Abortable, onProgress?: Progress | null): Promise<ExplainResult>;
  evaluate(image: ImageInput, classIdx?: number | string | null, options?: EvaluateOptions & Abortable): Promise<EvaluateResult>;
  predict(image: ImageInput, k?: number, options?: Abortable): Promise<Prediction[]>;
  overlay(image: ImageInput, result: ExplainResult, options?: OverlayOptions & Abortable): Promise<ImageData>;
  layers(options?: Abortable): Promise<LayerInfo[]>;
  methods(): Promise<MethodInfo[]>;
  defaultLayer(options?: Abortable): Promise<string>;
  free(): Promise<void>;
  terminate(): void;
}

export default GradcamClient;
