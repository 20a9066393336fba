// Types of www/gradcam-explainer.js, which defines <gradcam-explainer> when imported.
import type { Backend, Colormap, ExplainResult, MethodName } from '../pkg/gradcam_wasm.js';

/** The attributes <gradcam-explainer> reads (docs/embedding.md has the table); all are observed. */
export interface GradcamExplainerAttributes {
  src: string;
  model?: string;
  'model-data'?: string;
  labels?: string;
  integrity?: string;
  'input-size'?: `${number}`;
  class?: string;
  'target-class'?: string;
  method?: MethodName;
  layer?: string;
  colormap?: Colormap;
  alpha?: `${number}`;
  preprocess?: 'crop' | 'resize';
  normalize?: 'minmax' | 'raw';
  arch?: string;
  /** Changing it moves the element to a client of that backend. */
  backend?: Backend;
  /** Score-CAM uses only the N strongest channels (a whole number >= 1). */
  'score-cam-channels'?: `${number}`;
  caption?: string;
  /** 'lazy' (default): when near the viewport; 'eager': at once. */
  loading?: 'lazy' | 'eager';
  /** The older boolean alias of loading="eager". */
  eager?: '' | 'eager';
  /** Workers the long methods split their batches across: 'auto' (one per core, up to 4, where the page is not cross-origin isolated) or 1-16. */
  workers?: 'auto' | `${number}`;
}

export declare class GradcamExplainerElement extends HTMLElement {
  static readonly observedAttributes: (keyof GradcamExplainerAttributes)[];
  /** The last explanation, or null. */
  readonly result: ExplainResult | null;
  /** Runs the explanation again, aborting a run still in flight (attribute changes do this by themselves). */
  explain(): Promise<ExplainResult | null>;
}

declare global {
  interface HTMLElementTagNameMap {
    'gradcam-explainer': GradcamExplainerElement;
  }
  interface HTMLElementEventMap {
    'gradcam-result': CustomEvent<ExplainResult>;
    'gradcam-error': CustomEvent<Error>;
  }
}
