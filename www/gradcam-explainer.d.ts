// Types of www/gradcam-explainer.js, which defines <gradcam-explainer> when imported.
import type { ExplainResult } from '../pkg/gradcam_wasm.js';

export declare class GradcamExplainerElement extends HTMLElement {
  /** The last explanation, or null. */
  readonly result: ExplainResult | null;
  /** Runs the explanation again (attributes changes do this by themselves). */
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
