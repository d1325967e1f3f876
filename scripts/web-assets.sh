#!/bin/sh
# Re-fetch the web UI's vendored xterm.js files from the npm registry into
# internal/web/assets/vendor/xterm: the release tarballs are checked
# against pinned sha256 sums, then the built files are checked against
# SHA256SUMS (which internal/web's tests also check).
set -eu
cd "$(dirname "$0")/.."
out=internal/web/assets/vendor/xterm
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# fetch NAME VERSION SHA256: the package tarball, checked.
fetch() {
	base=${1#@xterm/}
	curl -fsSL -o "$tmp/$base.tgz" "https://registry.npmjs.org/$1/-/$base-$2.tgz"
	echo "$3  $tmp/$base.tgz" | sha256sum -c --quiet
	mkdir -p "$tmp/$base"
	tar -xzf "$tmp/$base.tgz" -C "$tmp/$base"
}
fetch @xterm/xterm 6.0.0 908e66e04af6c8dc6b00dd3b54de088e2e81e5ed866284fd6c2fb3c2d1c7a3f6
fetch @xterm/addon-fit 0.11.0 26003b4517a132b64e4ff228fd88a5fda3fff5e606c76093f6dcff772e9ecec0

mkdir -p "$out"
cp "$tmp/xterm/package/lib/xterm.mjs" "$out/xterm.mjs"
cp "$tmp/xterm/package/css/xterm.css" "$out/xterm.css"
cp "$tmp/xterm/package/LICENSE" "$out/LICENSE.xterm"
cp "$tmp/addon-fit/package/lib/addon-fit.mjs" "$out/addon-fit.mjs"
cp "$tmp/addon-fit/package/LICENSE" "$out/LICENSE.addon-fit"
# The source maps are not shipped; drop the comment that asks for them.
sed -i '/^\/\/# sourceMappingURL=/d' "$out/xterm.mjs" "$out/addon-fit.mjs"
(cd "$out" && sha256sum -c --quiet SHA256SUMS)
echo "vendored xterm.js matches $out/SHA256SUMS"
