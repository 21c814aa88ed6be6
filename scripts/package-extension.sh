#!/usr/bin/env bash
# Builds the Keel extension layer: a zip holding `extensions/keel-extension`, the layout Lambda
# expects for an external extension, for x86_64 — and for arm64 when the aarch64 target and its
# linker are installed (`scripts/install-tools.sh --arm64`). Prints each zip's size and its
# binary's.
#
# infra/template.yaml deploys target/layers/keel-extension.zip: `--deploy <architecture>` copies
# that architecture's zip there and prints its SHA-256 (scripts/deploy.sh digests it into each version), so
# a deployment needs only the architecture it deploys.
#
#   scripts/package-extension.sh            # release build, into target/layers/
#   scripts/package-extension.sh --deploy arm64   # …and arm64's zip is the one deployed
#   KEEL_LAYER_PROFILE=dev scripts/package-extension.sh   # a quick debug build
#   KEEL_EXTENSION_BINARY=target/debug/keel-extension scripts/package-extension.sh
#                                           # the host's zip from a binary built already (tests)
set -euo pipefail
cd "$(dirname "$0")/.."

deploy=""
if [ "${1:-}" = --deploy ]; then
    deploy="${2:-}"
    case "$deploy" in
        x86_64 | arm64) ;;
        *) echo "package-extension.sh: --deploy takes x86_64 or arm64, not '$deploy'" >&2; exit 2 ;;
    esac
elif [ $# -gt 0 ]; then
    echo "package-extension.sh: unknown argument '$1' (usage: package-extension.sh [--deploy x86_64|arm64])" >&2
    exit 2
fi

profile="${KEEL_LAYER_PROFILE:-release}"
profile_dir=$([ "$profile" = dev ] && echo debug || echo "$profile")
out=target/layers
mkdir -p "$out"

package() {
    local target=$1 arch=$2 binary=${3:-}
    if [ -z "$binary" ]; then
        local flags=(--profile "$profile" -p keel-extension --bin keel-extension)
        [ -n "$target" ] && flags+=(--target "$target")
        cargo build --quiet "${flags[@]}"
        binary="target/${target:+$target/}$profile_dir/keel-extension"
    fi
    local zip="$out/keel-extension-$arch.zip"
    python3 - "$binary" "$zip" <<'PY'
import sys, zipfile
binary, zip_path = sys.argv[1], sys.argv[2]
entry = zipfile.ZipInfo("extensions/keel-extension", date_time=(2026, 1, 1, 0, 0, 0))
entry.external_attr = 0o755 << 16  # executable
entry.compress_type = zipfile.ZIP_DEFLATED
with zipfile.ZipFile(zip_path, "w") as layer, open(binary, "rb") as data:
    layer.writestr(entry, data.read())
PY
    echo "$zip: $(stat -c %s "$zip") bytes (binary: $(stat -c %s "$binary") bytes)"
    built+=" $arch"
}
built=""

case "$(uname -m)" in
    x86_64) package "" x86_64 "${KEEL_EXTENSION_BINARY:-}" ;;
    aarch64) package "" arm64 "${KEEL_EXTENSION_BINARY:-}" ;;
esac
if [ "$(uname -m)" = x86_64 ]; then
    if rustup target list --installed 2>/dev/null | grep -q '^aarch64-unknown-linux-gnu$' \
        && command -v aarch64-linux-gnu-gcc > /dev/null; then
        CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc package aarch64-unknown-linux-gnu arm64
    else
        echo "arm64: skipped (needs the aarch64-unknown-linux-gnu target and aarch64-linux-gnu-gcc)"
    fi
fi

if [ -n "$deploy" ]; then
    zip="$out/keel-extension-$deploy.zip"
    if [[ " $built " != *" $deploy "* ]]; then
        echo "package-extension.sh: no $deploy layer was built (see above): cannot deploy it" >&2
        exit 1
    fi
    cp "$zip" "$out/keel-extension.zip"
    echo "$out/keel-extension.zip: $deploy, sha256 $(sha256sum "$out/keel-extension.zip" | cut -d' ' -f1)"
fi
