#!/usr/bin/env bash
# Make the certificates of a Dask cluster that speaks TLS: a private certificate authority (CA) and one key and
# certificate per role, signed by it.
#
#   deploy/make-certs.sh [OUT_DIR]        OUT_DIR defaults to deploy/.secrets/tls and must not hold a CA yet
#
# Writes into OUT_DIR (keys mode 0600; `.secrets/` is in .gitignore and .dockerignore: never commit or bake them in):
#   ca.pem                       the CA certificate: scheduler, workers and clients trust exactly this one
#   ca.key                       the CA's key: whoever holds it can mint certificates the cluster accepts. Move it
#                                off the machine after running this script; it is only needed to sign new certificates
#   scheduler.pem, scheduler.key `dask scheduler --tls-cert/--tls-key`
#   worker.pem, worker.key       `dask worker --tls-cert/--tls-key`
#   client.pem, client.key       the flow runner: `cohort-dosimetry run --address tls://HOST:8786 --tls-dir OUT_DIR`
#
# Both ends of every Dask connection present a certificate and check that the CA signed the other's (mutual TLS);
# Dask does not check host names, so one set works for any host. Every certificate signed by this CA is equally
# trusted: a client certificate lets its holder run code on the workers, which read the patient data.
# Validity: CERT_DAYS days (default 365). ECDSA P-256 keys. Needs the openssl command line tool (Debian: openssl).
set -euo pipefail

out=${1:-deploy/.secrets/tls}
days=${CERT_DAYS:-365}
command -v openssl >/dev/null || { echo "make-certs.sh: the openssl command is not installed" >&2; exit 1; }
if [ -e "$out/ca.pem" ] || [ -e "$out/ca.key" ]; then
    echo "make-certs.sh: $out already holds a CA; remove the folder to make a new one (every scheduler, worker" \
         "and client then needs the new files)" >&2
    exit 1
fi

umask 077
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -sha256 -days "$days" \
    -subj "/CN=cohort-dosimetry Dask CA" -keyout "$out/ca.key" -out "$out/ca.pem" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>"$tmp/log" ||
    { cat "$tmp/log" >&2; exit 1; }
printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
    "extendedKeyUsage=serverAuth,clientAuth" >"$tmp/leaf.ext"
for role in scheduler worker client; do
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -sha256 \
        -subj "/CN=cohort-dosimetry-dask-$role" -keyout "$out/$role.key" -out "$tmp/$role.csr" 2>"$tmp/log" ||
        { cat "$tmp/log" >&2; exit 1; }
    openssl x509 -req -in "$tmp/$role.csr" -CA "$out/ca.pem" -CAkey "$out/ca.key" \
        -set_serial "0x$(openssl rand -hex 16)" -days "$days" -sha256 -extfile "$tmp/leaf.ext" \
        -out "$out/$role.pem" 2>"$tmp/log" ||
        { cat "$tmp/log" >&2; exit 1; }
done
chmod 0600 "$out"/*.key
chmod 0644 "$out"/*.pem  # certificates are public; the keys are not
echo "make-certs.sh: CA and scheduler/worker/client certificates in $out (valid $days days)."
echo "make-certs.sh: move $out/ca.key to safe storage; it is needed only to sign new certificates."
