// The options the Explainer accepts, written by hand (the result types beside them, results.d.ts,
// are generated). src/schema.rs's tests hold every interface's keys to the lists the parsers
// accept, so a key added on one side only fails `cargo test`. MethodName and Colormap come from
// results.d.ts, generated from the Rust method and colormap lists.
export type Backend = 'auto' | 'cpu' | 'webgpu';
/** One shard's share of a long call's batched outputs (recordShardAsync), or several merged:
 *  output i (lengths[i] values, one after another in data) answers batched call calls[i]. */
export interface ShardTape { calls: Uint32Array; lengths: Uint32Array; data: Float32Array; complete?: boolean; count?: number }
export interface ExplainerOptions {
  /** the architecture family when the weights' names do not tell (see `archs()`) */
  arch?: string;
  /** class names: an array, or the text of a labels file (a JSON array or one name per line) */
  labels?: string[] | string;
  backend?: Backend;
  /** the square input size the network is fed */
  inputSize?: number;
  /** normalization on x / 255, three numbers each */
  mean?: [number, number, number]; std?: [number, number, number];
  /** an ONNX model's external weights (the .onnx.data file) */
  externalData?: Uint8Array | ArrayBuffer;
  /** the most memory one explanation may hold at once */
  memoryBudgetMiB?: number;
  /** 'auto' on a WebGPU adapter: time one explanation on each backend and keep the faster (default:
   *  on hardware adapters; true: on software adapters too; false: take a hardware adapter unmeasured) */
  calibrate?: boolean;
  /** earlier `backendInfo().calibration` records (at most 16): the one for this adapter is reused */
  calibration?: Calibration[];
}
export interface ExplainOptions {
  method?: MethodName; layer?: string; colormap?: Colormap; alpha?: number;
  normalize?: 'minmax' | 'raw'; preprocess?: 'crop' | 'resize'; signed?: boolean;
  onProgress?: (done: number, total: number) => void; scoreCamChannels?: number; scoreCamBatch?: number;
  /** Asked between batches of the long methods; true stops the call with a "cancelled: ..." Error.
   *  (An exception thrown by onProgress stops it the same way.) */
  isCancelled?: () => boolean;
  /** integrated-gradients steps (32, at most 256); baseline of integrated gradients and occlusion */
  igSteps?: number; igBaseline?: 'black' | 'blur';
  /** smoothgrad noisy copies (25, at most 256) and noise as a fraction of the input range (0.15) */
  smoothSamples?: number; smoothNoise?: number;
  /** occlusion window side and step in network-input pixels (a quarter of the shorter side and half that: 56, 28 at 224) */
  occlusionPatch?: number; occlusionStride?: number;
  /** CAMs that sum weighted feature maps: their first principal component instead (pytorch-grad-cam's eigen_smooth) */
  eigenSmooth?: boolean;
  /** layer-grid CAMs: the mean map over the image and its mirror, each times 0.9, 1, 1.1 (aug_smooth): 6x the passes, on the CPU */
  augSmooth?: boolean;
}
export interface OverlayOptions { colormap?: Colormap; alpha?: number }
/** `evaluate`'s options: those of `explain`, plus the curves' settings. */
export interface EvaluateOptions extends ExplainOptions {
  /** deletion / insertion steps (default 100, at most 1000) */ steps?: number;
  /** what removed pixels become (default 'blur', a Gaussian of sigma 5) */ baseline?: 'blur' | 'mean';
  /** side of the square cells removed together (default 1 pixel) */ cell?: number;
  /** also run ROAD (MoRF/LeRF at 10..90%, noisy linear imputation); default false */ road?: boolean;
}
/** One explanation: the generated result fields, and `overlay` on the explainer's own results. */
export interface ExplainResult extends ExplainResultData {
  /** the heatmap over the explained photo; gone from results that went through the worker (use the client's overlay) */
  overlay(options?: OverlayOptions): ImageData;
}
