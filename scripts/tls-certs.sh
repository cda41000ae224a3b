#!/usr/bin/env bash
# Makes the certificates a RaftKV cluster needs for TLS and mTLS (docs/security.md, "TLS"),
# with openssl:
#   DIR/ca-cert.pem, ca-key.pem          a CA of the cluster's own (10 years)
#   DIR/server-cert.pem, server-key.pem  the nodes' certificate, for their client ports and for
#                                        talking to each other (serverAuth and clientAuth), with
#                                        SANs localhost, 127.0.0.1, ::1 and every NODE name
#   DIR/client-cert.pem, client-key.pem  a client certificate for mTLS (clientAuth), CN=CLIENT
# Keys are ECDSA P-256, readable by their owner only. Existing files are kept unless FORCE=1.
#
#   scripts/tls-certs.sh [DIR] [NODE...]      (DIR: certs; NODE: node1 node2 node3)
#
# Environment: DAYS (server and client validity, 365), CLIENT (the client's CN, kvcli),
# FORCE=1 (replace existing files). Needs openssl.
set -euo pipefail
dir=${1:-certs}
shift || true
nodes=("$@")
[[ ${#nodes[@]} -gt 0 ]] || nodes=(node1 node2 node3)
days=${DAYS:-365}
client=${CLIENT:-kvcli}
command -v openssl >/dev/null || { echo "openssl is missing (apt-get install -y openssl)" >&2; exit 1; }
[[ $days =~ ^[1-9][0-9]*$ ]] || { echo "DAYS must be a positive whole number, not '$days'" >&2; exit 2; }
if [[ -e $dir/ca-cert.pem && ${FORCE:-0} != 1 ]]; then
    echo "$dir/ca-cert.pem exists: keeping $dir as it is (FORCE=1 to replace it)" >&2
    exit 0
fi
mkdir -p "$dir"
umask 077
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

key() { openssl ecparam -name prime256v1 -genkey -noout -out "$1"; }

key "$dir/ca-key.pem"
openssl req -x509 -new -key "$dir/ca-key.pem" -sha256 -days 3650 -subj "/CN=RaftKV cluster CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$dir/ca-cert.pem" 2>/dev/null

sans="DNS:localhost,IP:127.0.0.1,IP:::1"
for node in "${nodes[@]}"; do
    sans="$sans,DNS:$node"
done
# Signs CSR $1 into certificate $2 with the extensions in file $3.
sign() {
    openssl x509 -req -in "$1" -CA "$dir/ca-cert.pem" -CAkey "$dir/ca-key.pem" -CAcreateserial \
        -CAserial "$tmp/serial" -days "$days" -sha256 -extfile "$3" -out "$2" 2>/dev/null
}

key "$dir/server-key.pem"
openssl req -new -key "$dir/server-key.pem" -subj "/CN=raftkv-node" -out "$tmp/server.csr"
cat >"$tmp/server.ext" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=$sans
EXT
sign "$tmp/server.csr" "$dir/server-cert.pem" "$tmp/server.ext"

key "$dir/client-key.pem"
openssl req -new -key "$dir/client-key.pem" -subj "/CN=$client" -out "$tmp/client.csr"
cat >"$tmp/client.ext" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth
EXT
sign "$tmp/client.csr" "$dir/client-cert.pem" "$tmp/client.ext"

chmod 600 "$dir"/*-key.pem
chmod 644 "$dir"/*-cert.pem
openssl verify -CAfile "$dir/ca-cert.pem" "$dir/server-cert.pem" "$dir/client-cert.pem" >/dev/null
echo "made $dir/{ca,server,client}-{cert,key}.pem (server SANs: $sans)"
