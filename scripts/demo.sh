#!/usr/bin/env bash
# Runs keyrelay end to end on one machine: installs what is missing, builds, creates a
# SoftHSM2 token, starts a keyserver on 127.0.0.1, signs a real Windows executable with
# osslsigncode through libkeyrelay_pkcs11.so, verifies it, and stops the keyserver.
#
# Everything is created under a new temporary folder, which is kept for inspection and
# printed at the end. Nothing else on the machine changes apart from installed packages.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

step() { printf '\n==> %s\n' "$*"; }

step "Installing missing Debian packages"
scripts/install-packages.sh

step "Building the workspace"
cargo build --workspace --locked --quiet
bin="${CARGO_TARGET_DIR:-$root/target}/debug"

work=$(mktemp -d -t keyrelay-demo.XXXXXX)
server_pid=""
stop_server() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid"
    wait "$server_pid" || true
  fi
}
trap stop_server EXIT

step "Creating a SoftHSM2 token with an RSA and an EC key pair in $work/token"
"$bin/softhsm-fixtures" token --dir "$work/token" --label keyrelay-demo
"$bin/softhsm-fixtures" tls --dir "$work/tls" --name localhost --name 127.0.0.1 >/dev/null

step "Creating the audit key that signs the audit log's anchor records"
"$bin/keyserver" audit keygen --out "$work/audit-key.pem"

step "Writing the policy"
cat >"$work/policy.toml" <<EOF
[server]
listen = "127.0.0.1:0"
certificate_chain = "tls/server-chain.pem"
private_key = "tls/server-key.pem"
audit_log = "audit.jsonl"

[tokens.demo]
module = "/usr/lib/softhsm/libsofthsm2.so"
label = "keyrelay-demo"
pin_file = "token/user.pin"

[keys.release-rsa]
token = "demo"
label = "rsa-signing"
environment = "release"
digests = ["sha256", "sha384", "sha512"]
signatures_per_minute = 60
signatures_per_day = 1000

[keys.release-ec]
token = "demo"
label = "ec-signing"
environment = "release"
digests = ["sha256", "sha384", "sha512"]
signatures_per_minute = 60
signatures_per_day = 1000

[audit]
signing_key = "audit-key.pem"
EOF

step "Creating a client credential for release-rsa, added to the policy"
"$bin/keyserver" credential new --keys release-rsa --config "$work/policy.toml" \
  >"$work/credential.txt"
key_id=$(awk '/^KeyId:/ { print $2 }' "$work/credential.txt")
(umask 077 && awk '/^KeySecret:/ { print $2 }' "$work/credential.txt" >"$work/client.secret")
echo "KeyId $key_id; its KeySecret is in $work/client.secret"

step "Checking the policy"
SOFTHSM2_CONF="$work/token/softhsm2.conf" "$bin/keyserver" check --config "$work/policy.toml"

step "Starting the keyserver"
SOFTHSM2_CONF="$work/token/softhsm2.conf" "$bin/keyserver" serve \
  --config "$work/policy.toml" --ready-file "$work/keyserver.addr" 2>"$work/keyserver.log" &
server_pid=$!
for _ in $(seq 100); do
  [ -s "$work/keyserver.addr" ] && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/keyserver.log"; exit 1; }
  sleep 0.1
done
address=$(cat "$work/keyserver.addr")
echo "listening on $address (log: $work/keyserver.log)"

cat >"$work/client.toml" <<EOF
server = "$address"
server_name = "localhost"
ca_certificate = "tls/tls-ca.pem"
key_id = "$key_id"
key_secret_file = "client.secret"
EOF

step "Signing a Windows executable with osslsigncode through keyrelay"
distlib=$(python3 -c 'import os, pip._vendor.distlib as d; print(os.path.dirname(d.__file__))')
cp "$distlib/t64.exe" "$work/sample.exe"
KEYRELAY_CONFIG="$work/client.toml" osslsigncode sign \
  -pkcs11engine /usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so \
  -pkcs11module "$bin/libkeyrelay_pkcs11.so" \
  -key "pkcs11:token=demo;object=rsa-signing;type=private" -pass unused \
  -certs "$work/token/certs/rsa-signing.pem" \
  -h sha256 -n "keyrelay demo" \
  -in "$work/sample.exe" -out "$work/sample-signed.exe"

step "Verifying the signature"
osslsigncode verify -CAfile "$work/token/ca.pem" -in "$work/sample-signed.exe" \
  >"$work/verify.txt"
grep -E "Signature verification: ok|Succeeded" "$work/verify.txt"

step "The audit log"
cat "$work/audit.jsonl"

stop_server
server_pid=""

step "Verifying the audit log's hash chain and anchor signatures"
"$bin/keyserver" audit verify --public-key "$work/audit-key.pub" "$work/audit.jsonl"
printf '\nDone. Files are in %s\n' "$work"
