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
  gnutls-bin                 # p11tool
  openssh-client             # ssh and ssh-keygen -D
  openssh-server             # the local sshd the ssh login test starts
  libgcab-tests              # a real CAB archive for osslsigncode to sign
  python3-pip                # installs python-pkcs11 below
)

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  sudo_cmd=(sudo)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "Installing Debian packages: ${missing[*]}"
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# python-pkcs11 is not packaged by Debian 12; the python-pkcs11 test needs it for python3.
if ! python3 -c "import pkcs11" 2>/dev/null; then
  echo "Installing python-pkcs11 with pip"
  python3 -m pip install --quiet "python-pkcs11==0.10.1" \
    || python3 -m pip install --quiet --break-system-packages "python-pkcs11==0.10.1"
fi
