#!/usr/bin/env bash
# Builds target/debian/callguard_VERSION_ARCH.deb: the release binary, then
# the man pages and completions it generates, then `cargo deb` (install it
# with `cargo install cargo-deb`).
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v cargo-deb >/dev/null || {
	echo "cargo-deb is missing: cargo install cargo-deb --locked" >&2
	exit 1
}
cargo build --release
out=target/deb-assets
rm -rf "$out" && mkdir -p "$out/man"
target/release/callguard man --out-dir "$out/man"
gzip -9n "$out"/man/*.1
target/release/callguard completions bash >"$out/callguard.bash"
target/release/callguard completions zsh >"$out/_callguard"
target/release/callguard completions fish >"$out/callguard.fish"
# Symbols go to a compressed .debug file beside the binary (backtraces and
# perf keep working; the binary itself is stripped).
cargo deb --no-build --separate-debug-symbols --compress-debug-symbols=zlib "$@"
