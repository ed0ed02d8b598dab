#!/usr/bin/env bash
# Refreshes the console's vendored front-end libraries from npm. The files
# are committed and embedded as they are: no build step, no CDN at run time.
# Usage: console/vendor.sh [PREACT_VERSION] [HTM_VERSION]
set -euo pipefail
preact=${1:-11.2.0}
htm=${2:-3.1.1}
here=$(cd "$(dirname "$0")" && pwd)/web/vendor
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
npm install --prefix "$tmp" --no-package-lock --no-audit --no-fund --silent "preact@$preact" "htm@$htm"
m="$tmp/node_modules"
cp "$m/preact/dist/preact.mjs" "$here/preact.mjs"
# hooks imports "preact" by its bare name; the page has no import map.
sed 's#from"preact"#from"./preact.mjs"#' "$m/preact/hooks/dist/hooks.mjs" > "$here/hooks.mjs"
cp "$m/htm/dist/htm.mjs" "$here/htm.mjs"
sed -i '/sourceMappingURL/d' "$here"/*.mjs
{
  echo "preact $preact (MIT)"; echo; cat "$m/preact/LICENSE"; echo; echo "----"
  echo "htm $htm (Apache-2.0)"; echo; cat "$m/htm/LICENSE"
} > "$here/LICENSES.txt"
echo "vendored preact $preact, htm $htm"
