"""Dask over TLS: a ``dask scheduler`` and a ``dask worker`` started as separate processes on loopback with the
certificates that deploy/make-certs.sh makes. A client holding the client certificate runs tasks, and
``cohort-dosimetry run --address tls://... --tls-dir`` runs the cohort flow on them; clients without a certificate
the CA signed are refused within a bounded time.
"""

from __future__ import annotations

import copy
import datetime
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAKE_CERTS = ROOT / "deploy" / "make-certs.sh"
ROLES = ("scheduler", "worker", "client")
#: Longest wait for a scheduler or worker process to come up on a loaded 2-core machine (about 3 s when idle).
START_TIMEOUT_S = 60
#: Connect timeout given to a client that must be refused: the refusal has to come within it.
REFUSE_TIMEOUT_S = 5


def make_certs_with_cryptography(out: Path, ca_name: str = "cohort-dosimetry test CA") -> None:
    """The files deploy/make-certs.sh writes (ca.pem/.key, {scheduler,worker,client}.pem/.key), made with the
    ``cryptography`` package: ECDSA P-256, a CA and leaf certificates for TLS server and client use, 1 day valid."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    out.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)

    def usage(**allowed) -> x509.KeyUsage:
        names = (
            "digital_signature",
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "key_cert_sign",
            "crl_sign",
            "encipher_only",
            "decipher_only",
        )
        return x509.KeyUsage(**{n: allowed.get(n, False) for n in names})

    def write(name: str, key, cert) -> None:
        (out / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path = out / f"{name}.key"
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        key_path.chmod(0o600)

    def builder(subject: str, issuer: x509.Name, public_key) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca_name)])
    ca = (
        builder(ca_name, ca_subject, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(usage(key_cert_sign=True, crl_sign=True), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    write("ca", ca_key, ca)
    for role in ROLES:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            builder(f"cohort-dosimetry-dask-{role}", ca.subject, key.public_key())
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage(digital_signature=True), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        write(role, key, cert)


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    """The cluster's certificates, made by deploy/make-certs.sh (the documented way) where openssl is installed."""
    out = tmp_path_factory.mktemp("tls") / "certs"
    if shutil.which("openssl"):
        done = subprocess.run(["bash", str(MAKE_CERTS), str(out)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    else:
        make_certs_with_cryptography(out)
    assert {p.name for p in out.iterdir()} == {"ca.pem", "ca.key"} | {f"{r}.{x}" for r in ROLES for x in ("pem", "key")}
    return out


def _security(certs: Path, client_certs: Path | None = None):
    from distributed.security import Security

    client_certs = client_certs or certs
    return Security(
        tls_ca_file=str(certs / "ca.pem"),
        tls_client_cert=str(client_certs / "client.pem"),
        tls_client_key=str(client_certs / "client.key"),
        require_encryption=True,
    )


def _log_tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:] if path.exists() else "(no log)"


def _wait_for_log(path: Path, text: str, timeout_s: float = 10.0) -> None:
    """Wait until a process's log holds ``text`` (it writes the line right after the event; bounded wait)."""
    deadline = time.monotonic() + timeout_s
    while text not in path.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"{path.name} has no {text!r} after {timeout_s} s:\n{_log_tail(path)}"
        time.sleep(0.05)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


@pytest.fixture(scope="module")
def tls_cluster(certs, prefect_api, tmp_path_factory):
    """A TLS-only ``dask scheduler`` and one ``dask worker`` (no nanny: the worker is the process started here) on
    127.0.0.1, the worker with the pseudonym key as a file (COHORT_DOSIMETRY_PSEUDONYM_KEY_FILE), as deployments give
    it. Yields the scheduler address, the worker's pid and the key file; both processes are stopped at the end."""
    from distributed import Client

    work = tmp_path_factory.mktemp("tls-cluster")
    key_file = work / "pseudonym.key"
    key_file.write_text("a pseudonym key for the TLS cluster test\n")
    key_file.chmod(0o600)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COHORT_DOSIMETRY_PSEUDONYM_KEY_FILE": str(key_file)}
    env.pop("COHORT_DOSIMETRY_PSEUDONYM_KEY", None)
    tls = ["--tls-ca-file", str(certs / "ca.pem")]
    with ExitStack() as stack:
        scheduler_file, scheduler_log = work / "scheduler.json", work / "scheduler.log"
        scheduler = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dask",
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--protocol",
                "tls",
                "--no-dashboard",
                "--scheduler-file",
                str(scheduler_file),
                *tls,
                "--tls-cert",
                str(certs / "scheduler.pem"),
                "--tls-key",
                str(certs / "scheduler.key"),
            ],
            stdout=stack.enter_context(scheduler_log.open("wb")),
            stderr=subprocess.STDOUT,
            env=env,
        )
        stack.callback(_stop, scheduler)
        deadline = time.monotonic() + START_TIMEOUT_S
        address = None
        while address is None:  # the scheduler writes its file once it listens
            assert scheduler.poll() is None, f"dask scheduler exited:\n{_log_tail(scheduler_log)}"
            assert time.monotonic() < deadline, (
                f"no scheduler file after {START_TIMEOUT_S} s:\n{_log_tail(scheduler_log)}"
            )
            try:
                address = json.loads(scheduler_file.read_text())["address"]
            except (FileNotFoundError, json.JSONDecodeError, KeyError):
                time.sleep(0.1)
        assert address.startswith("tls://127.0.0.1:"), address
        worker_log = work / "worker.log"
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dask",
                "worker",
                address,
                "--host",
                "127.0.0.1",
                "--no-nanny",
                "--no-dashboard",
                "--nthreads",
                "1",
                "--name",
                "tls-worker",
                *tls,
                "--tls-cert",
                str(certs / "worker.pem"),
                "--tls-key",
                str(certs / "worker.key"),
            ],
            stdout=stack.enter_context(worker_log.open("wb")),
            stderr=subprocess.STDOUT,
            env=env,
        )
        stack.callback(_stop, worker)
        with Client(address, security=_security(certs), timeout=START_TIMEOUT_S, set_as_default=False) as client:
            try:
                client.wait_for_workers(1, timeout=START_TIMEOUT_S)
            except TimeoutError:
                pytest.fail(f"no TLS worker joined in {START_TIMEOUT_S} s:\n{_log_tail(worker_log)}")
        yield {"address": address, "worker_pid": worker.pid, "key_file": key_file, "scheduler_log": scheduler_log}


@pytest.fixture
def restore_dask_tls(monkeypatch):
    """Undo what ``--tls-dir`` sets in this process (Dask's config and its DASK_* environment variables)."""
    import dask

    from flows._runtime import TLS_CLIENT_FILES, _dask_env_name

    for key in TLS_CLIENT_FILES:  # setenv then delenv: monkeypatch restores the variable's state before the test
        monkeypatch.setenv(_dask_env_name(key), "")
        monkeypatch.delenv(_dask_env_name(key))
    saved = copy.deepcopy(dask.config.config)
    yield
    dask.config.config.clear()
    dask.config.config.update(saved)


def test_client_with_the_certificate_runs_tasks_and_clients_without_one_are_refused(tls_cluster, certs, tmp_path):
    from distributed import Client

    address = tls_cluster["address"]
    with Client(address, security=_security(certs), timeout=START_TIMEOUT_S, set_as_default=False) as client:
        assert all(w.startswith("tls://") for w in client.scheduler_info()["workers"])
        # the task ran in the worker process started by the fixture, over the TLS connection
        assert client.submit(os.getpid, pure=False).result(timeout=30) == tls_cluster["worker_pid"]

    # A TLS client without a certificate: the scheduler ends the handshake ("certificate required"; the client
    # sees that alert or the connection closed, on its first read under TLS 1.3) and says so in its log.
    host, port = address.removeprefix("tls://").rsplit(":", 1)
    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    context.check_hostname = False  # as Dask does: the CA is the cluster's own, hosts are addressed by IP
    with socket.create_connection((host, int(port)), timeout=REFUSE_TIMEOUT_S) as raw:
        with pytest.raises(ssl.SSLError, match="CERTIFICATE_REQUIRED|EOF occurred"):
            with context.wrap_socket(raw) as conn:
                conn.sendall(b"\0" * 8)
                conn.recv(1)
    _wait_for_log(tls_cluster["scheduler_log"], "peer did not return a certificate")

    # A Dask client whose certificate another CA signed (it trusts the cluster's CA itself), and one that does not
    # speak TLS at all: both refused within the connect timeout.
    make_certs_with_cryptography(tmp_path / "other-ca", ca_name="another CA")
    for name, kwargs in [
        ("certificate of another CA", dict(security=_security(certs, tmp_path / "other-ca"))),
        ("no TLS", dict(address=address.replace("tls://", "tcp://"))),
    ]:
        t0 = time.monotonic()
        with pytest.raises(OSError):
            Client(kwargs.pop("address", address), timeout=REFUSE_TIMEOUT_S, set_as_default=False, **kwargs)
        elapsed = time.monotonic() - t0
        assert elapsed < REFUSE_TIMEOUT_S + 10, f"client with {name} took {elapsed:.1f} s to be refused"
    # the scheduler, not only the client, ended the other CA's connection
    _wait_for_log(tls_cluster["scheduler_log"], "certificate verify failed")

    # the scheduler still serves the client that holds the certificate
    with Client(address, security=_security(certs), timeout=START_TIMEOUT_S, set_as_default=False) as client:
        assert client.submit(sum, [1, 2, 3]).result(timeout=30) == 6


def test_run_with_tls_dir_runs_the_cohort_on_the_tls_cluster_and_refuses_without_it(
    tls_cluster, certs, tiny_dicom, tmp_path, monkeypatch, restore_dask_tls, capsys
):
    from distributed import Client

    from cohort_dosimetry.cli import main
    from cohort_dosimetry.store import key_fingerprint, open_cohort
    from cohort_dosimetry.store._pseudonym import FINGERPRINT_ATTR

    address, cohort_dir = tls_cluster["address"], tmp_path / "cohort"
    monkeypatch.setenv("COHORT_DOSIMETRY_PSEUDONYM_KEY_FILE", str(tls_cluster["key_file"]))
    monkeypatch.delenv("COHORT_DOSIMETRY_PSEUDONYM_KEY", raising=False)
    args = ["run", str(tiny_dicom), str(cohort_dir), "--address", address, "--methods", "dvk", "--grid", "ct"]

    t0 = time.monotonic()
    assert main(args) == 2  # no certificate configured: refused before any flow starts, naming the fix
    assert time.monotonic() - t0 < 10
    assert "--tls-dir" in capsys.readouterr().err
    assert not cohort_dir.exists()

    def executed() -> int:
        with Client(address, security=_security(certs), timeout=START_TIMEOUT_S, set_as_default=False) as client:
            return sum(client.run(lambda dask_worker: dask_worker.state.executed_count).values())

    before = executed()
    assert main([*args, "--tls-dir", str(certs)]) == 0
    cohort = open_cohort(cohort_dir)
    scans = cohort.scans()
    assert len(scans) >= 6 and all(cohort.has_arrays(p, t, ["dose_rate_dvk"]) for p, t in scans)
    # ingest, one dose task and one statistics task per scan, the tables and the report ran on the TLS worker
    assert executed() - before >= 2 * len(scans)
    # the worker pseudonymised with the key file it was given, and made no key of its own in the cohort
    assert cohort.attrs[FINGERPRINT_ATTR] == key_fingerprint(tls_cluster["key_file"].read_bytes().strip())
    assert not (cohort_dir / ".secrets").exists()


def test_tls_dir_missing_a_file_is_a_usage_error_naming_it(tmp_path, restore_dask_tls, capsys):
    from cohort_dosimetry.cli import main

    (tmp_path / "ca.pem").write_text("not used")
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "dicom", "cohort", "--address", "tls://127.0.0.1:1", "--tls-dir", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "client.pem" in err and "client.key" in err and "make-certs.sh" in err


def test_a_configured_certificate_refuses_an_unencrypted_scheduler_address(certs, restore_dask_tls):
    from flows._runtime import check_scheduler_security, use_tls_dir

    check_scheduler_security("tcp://127.0.0.1:8786")  # no certificate configured: plain TCP is allowed
    with pytest.raises(ValueError, match="--tls-dir"):
        check_scheduler_security("tls://127.0.0.1:8786")
    use_tls_dir(certs)
    assert os.environ["DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT"] == str((certs / "client.pem").resolve())
    check_scheduler_security("tls://127.0.0.1:8786")
    with pytest.raises(ValueError, match="not tls://"):
        check_scheduler_security("tcp://127.0.0.1:8786")
