#!/usr/bin/env bash
# Makes a throwaway PKI for wss:// tests and benches in DIR: a CA (ca.pem)
# and a P-256 server certificate it signed for localhost and 127.0.0.1
# (server.pem, server.key), valid for 2 days. Needs the openssl command.
#
# usage: tests/make-cert.sh DIR
set -euo pipefail
dir=${1:?usage: tests/make-cert.sh DIR}
mkdir -p "$dir"
cd "$dir"
{
  openssl ecparam -name prime256v1 -genkey -noout -out ca.key
  openssl req -x509 -new -key ca.key -out ca.pem -days 2 -subj "/CN=wsloop test CA"
  openssl ecparam -name prime256v1 -genkey -noout -out server.key
  openssl req -new -key server.key -out server.csr -subj /CN=localhost
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' > leaf.ext
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile leaf.ext
} > /dev/null 2>&1
