#!/usr/bin/env bash
# Installs the Debian packages that keyrelay's demo and tests need, skipping those present.
set -euo pipefail

packages=(
  softhsm2                   # the backend token
  opensc                     # pkcs11-tool, used by fixtures and tests
  libengine-pkcs11-openssl   # libp11's OpenSSL engine, used by osslsigncode and openssl
  osslsigncode
  openssl
  openjdk-17-jdk-headless    # jarsigner and keytool
  libcommons-cli-java        # a real jar for jarsigner to sign
)

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "Installing Debian packages: ${missing[*]}"
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  sudo_cmd=(sudo)
fi
"${sudo_cmd[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
