// The promise client, from a page of this site: load the bundled model, explain a photo with
// Grad-CAM++, draw the overlay. The page runs this very file (and shows it).
import { GradcamClient } from '../gradcam/www/gradcam-client.js';

const out = document.getElementById('client-example');
const client = new GradcamClient();
await client.load(new URL('../gradcam/assets/models/efficientnet-lite0.safetensors', import.meta.url));

// A Blob is decoded once; explain and overlay then share the worker's forward pass of it.
const photo = await (await fetch(new URL('../img/coffee.png', import.meta.url))).blob();
const result = await client.explain(photo, null, { method: 'gradcam++' });
const overlay = await client.overlay(photo, result, { colormap: 'turbo', alpha: 0.5 });

const canvas = out.querySelector('canvas');
[canvas.width, canvas.height] = [overlay.width, overlay.height];
canvas.getContext('2d').putImageData(overlay, 0, 0);
out.querySelector('output').textContent = `${result.methodLabel}: ${result.label} (p ${result.probability.toFixed(2)})`;
out.dataset.classIdx = String(result.classIdx);
