#!/usr/bin/env bash
# Runs keyrelay's whole test suite: installs missing packages, builds every binary the
# end-to-end tests load (the keyserver and libkeyrelay_pkcs11.so), then runs the tests.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-packages.sh
cargo build --workspace --locked
cargo test --workspace --locked
