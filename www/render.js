// Drawing helpers shared by the demo page and the <gradcam-explainer> element.

/**
 * The part of a width x height photo that the network saw, in photo pixels.
 * 'resize' squeezes the whole photo into the input; 'crop' is torchvision's Resize(256) +
 * CenterCrop(224) (the input's size comes from the result when it has a gradient image).
 * A `result.crop = {x, y, width, height}` from the wasm side, when present, wins.
 */
export function cropRect(width, height, preprocess, result) {
  const c = result && result.crop;
  if (c && c.width > 0 && c.height > 0) return { x: c.x, y: c.y, width: c.width, height: c.height };
  if (preprocess === 'resize') return { x: 0, y: 0, width, height };
  const inW = (result && result.rgbWidth) || 224;
  const inH = (result && result.rgbHeight) || 224;
  const scale = Math.min(width, height) / 256; // photo pixels per resized pixel
  const w = Math.min(width, inW * scale);
  const h = Math.min(height, inH * scale);
  return { x: (width - w) / 2, y: (height - h) / 2, width: w, height: h };
}

/** Draws a CHW float image in [0, 1] (3 x h x w) scaled onto the whole of ctx's canvas. */
export function drawRgbChw(ctx, rgb, w, h) {
  const n = w * h;
  const tmp = document.createElement('canvas');
  tmp.width = w;
  tmp.height = h;
  const img = tmp.getContext('2d').createImageData(w, h);
  const d = img.data;
  for (let i = 0; i < n; i++) {
    d[4 * i] = 255 * rgb[i];
    d[4 * i + 1] = 255 * rgb[n + i];
    d[4 * i + 2] = 255 * rgb[2 * n + i];
    d[4 * i + 3] = 255;
  }
  tmp.getContext('2d').putImageData(img, 0, 0);
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = 'high';
  ctx.drawImage(tmp, 0, 0, ctx.canvas.width, ctx.canvas.height);
}
