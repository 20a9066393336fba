// Bundles the demo page into dist/: `npm run build:web`, then serve dist/ (`node www/serve.mjs dist`).
// The plain ES modules in www/ also work unbundled from the repository root; this build only adds
// hashing and minification. The wasm package (pkg/) must be built first.
const path = require('node:path');
const fs = require('node:fs');
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
  ],
  devServer: {
    static: { directory: root, watch: false },
    host: '127.0.0.1',
    port: 8080,
    hot: false,
    liveReload: false,
    client: { overlay: true },
    headers: { 'Content-Security-Policy': "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'" },
  },
});
