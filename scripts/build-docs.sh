#!/usr/bin/env bash
# Builds the documentation site into target/site: docs/ rendered by MkDocs (site/mkdocs.yml, its own
# small theme, no inline script, so it runs under a strict CSP), with the npm package copied in
# (target/site/gradcam/) so that its pages run the element and the client they document.
# Needs pkg/ and the default model (scripts/build-web.sh, scripts/setup.sh); MkDocs comes from PyPI
# into target/docs-venv. Serve it with: node www/serve.mjs target/site
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/pack.sh >/dev/null
venv=target/docs-venv
if [[ ! -x $venv/bin/mkdocs ]]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet mkdocs==1.6.1 pymdown-extensions==13.1.2 pygments==2.21.0
fi
rm -rf target/site
"$venv/bin/mkdocs" build --quiet --strict -f site/mkdocs.yml
mkdir -p target/site/gradcam target/site/img
cp -r target/npm/package/pkg target/npm/package/www target/npm/package/assets target/site/gradcam/
cp assets/samples/chelsea.png assets/samples/coffee.png target/site/img/
cp www/favicon.svg target/site/
echo "build-docs: target/site ($(find target/site -type f | wc -l) files)"
