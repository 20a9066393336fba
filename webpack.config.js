// Bundles the demo page into dist/: `npm run build:web`, then serve dist/ (`node www/serve.mjs dist`).
// The plain ES modules in www/ also work unbundled from the repository root; this build only adds
// hashing and minification. The wasm package (pkg/) must be built first.
const path = require('node:path');
const fs = require('node:fs');
const { createHash } = require('node:crypto');
const webpack = require('webpack');
const HtmlWebpackPlugin = require('html-webpack-plugin');
const CopyPlugin = require('copy-webpack-plugin');

const root = __dirname;

// index.html loads www/demo.js as a module for the unbundled page; the bundle replaces that tag.
function template() {
  const html = fs.readFileSync(path.join(root, 'index.html'), 'utf8');
  return html.replace(/\s*<script type="module" src="www\/demo\.js"><\/script>/, '');
}

const copy = [
  { from: 'www/style.css', to: 'www/style.css' },
  { from: 'www/favicon.svg', to: 'www/favicon.svg' },
  { from: 'pkg', to: 'pkg', noErrorOnMissing: true, globOptions: { ignore: ['**/.gitignore', '**/package.json'] } },
  { from: 'assets/models/*.safetensors', to: 'assets/models/[name][ext]', noErrorOnMissing: true },
  { from: 'assets/samples', to: 'assets/samples', noErrorOnMissing: true },
];

// Not precached by the service worker: the model (www/model-loader.js caches it, with progress) and
// the copied pkg/ files the bundle does not load (it loads its own hashed copy of the wasm), the
// relaxed-SIMD and threaded builds' (pkg/relaxed/, pkg/threads/, pkg/threads-relaxed/) included.
const NOT_PRECACHED = /^(assets\/models\/|sw\.js$|pkg\/((relaxed|threads|threads-relaxed)\/)?gradcam_wasm(\.js|_bg\.wasm)$)|\.(d\.ts|map|txt)$/;

/**
 * Emits sw.js: www/sw.js behind one line naming this build's files and a version hashed from their
 * contents, so that the service worker precaches exactly this build and a new build gets a new cache.
 */
class ServiceWorkerPlugin {
  apply(compiler) {
    const { Compilation, sources } = compiler.webpack;
    compiler.hooks.thisCompilation.tap('ServiceWorkerPlugin', (compilation) => {
      // The last stage: after the copied files and index.html exist.
      compilation.hooks.processAssets.tap({ name: 'ServiceWorkerPlugin', stage: Compilation.PROCESS_ASSETS_STAGE_REPORT }, () => {
        const files = compilation.getAssets().map((a) => a.name).filter((n) => !NOT_PRECACHED.test(n)).sort();
        const hash = createHash('sha256');
        for (const name of files) hash.update(name).update(compilation.getAsset(name).source.buffer());
        const manifest = { version: hash.digest('hex').slice(0, 16), urls: files.map((n) => (n === 'index.html' ? './' : n)) };
        const code = `self.GRADCAM_PRECACHE = ${JSON.stringify(manifest)};\n${fs.readFileSync(path.join(root, 'www/sw.js'), 'utf8')}`;
        compilation.emitAsset('sw.js', new sources.RawSource(code));
      });
    });
  }
}

module.exports = (env, argv) => ({
  mode: argv.mode || 'production',
  context: root,
  entry: { demo: './www/demo.js' },
  output: {
    path: path.join(root, 'dist'),
    filename: 'www/[name].[contenthash:8].js',
    chunkFilename: 'www/[name].[contenthash:8].js',
    assetModuleFilename: 'pkg/[name].[contenthash:8][ext]',
    publicPath: 'auto',
    clean: true,
  },
  // No eval-based source maps: the page's CSP has no 'unsafe-eval'.
  devtool: argv.mode === 'development' ? 'source-map' : false,
  experiments: { asyncWebAssembly: true },
  module: {
    rules: [{ test: /\.wasm$/, type: 'asset/resource' }],
  },
  performance: { hints: false },
  plugins: [
    new HtmlWebpackPlugin({ templateContent: template(), inject: 'head', scriptLoading: 'module', minify: false }),
    new CopyPlugin({ patterns: copy }),
    // www/demo.js registers the service worker only where this is defined: the unbundled page has none.
    new webpack.DefinePlugin({ __GRADCAM_SW__: JSON.stringify('sw.js') }),
    new ServiceWorkerPlugin(),
  ],
  devServer: {
    // The site's folders only (as www/serve.mjs): not the repository's sources, .git or node_modules.
    static: ['www', 'pkg', 'assets'].map((dir) => ({ directory: path.join(root, dir), publicPath: `/${dir}`, watch: false, serveIndex: false })),
    host: '127.0.0.1',
    port: 8080,
    hot: false,
    liveReload: false,
    client: { overlay: true },
    headers: {
      'Content-Security-Policy': "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; base-uri 'none'; frame-ancestors 'self'",
      // Cross-origin isolation: the worker then runs the threaded build (www/thread-pool.js).
      'Cross-Origin-Opener-Policy': 'same-origin',
      'Cross-Origin-Embedder-Policy': 'require-corp',
    },
  },
});
