"""A development certificate authority for the suite's mutual TLS.

`lattice up` calls `ensure_dev_pki` on start: the first time it writes a CA
and one certificate per service into `<data-dir>/tls/`; later starts reuse
them and renew only a certificate that is missing or close to expiry. Each
service certificate is valid for both ends of a connection (server and
client auth), names the service and the loopback addresses, and is signed by
the suite CA, which every service (and the SDK/CLI) trusts. Production takes
certificate files from settings instead (cert-manager issues them).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lattice.tokens import DEV_CA_FILE

TLS_DIR = str(Path(DEV_CA_FILE).parent)
CA_DAYS = 3650
CERT_DAYS = 90
RENEW_BEFORE = dt.timedelta(days=7)


@dataclasses.dataclass(frozen=True)
class CertFiles:
    """One service's certificate and key, and the CA that signed it."""

    ca: Path
    cert: Path
    key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _san(names: Iterable[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def _load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca_path, key_path = directory / "ca.pem", directory / "ca-key.pem"
    if ca_path.exists() and key_path.exists():
        cert = x509.load_pem_x509_certificate(ca_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), None)
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return cert, key
    now = dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name("lattice development CA")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    _write_private(key_path, _key_pem(key))
    ca_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def _fresh(path: Path, ca: x509.Certificate, names: Sequence[str]) -> bool:
    """Whether the certificate at `path` is signed by `ca`, valid a while longer, names all."""
    if not path.exists():
        return False
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    if cert.issuer != ca.subject:
        return False
    if cert.not_valid_after_utc - dt.datetime.now(dt.UTC) < RENEW_BEFORE:
        return False
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return set(_san(names)) <= set(san)


def issue(
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    common_name: str,
    names: Sequence[str],
    *,
    days: int = CERT_DAYS,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A certificate for `common_name`, valid as TLS server and client, for `names`."""
    now = dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(_san(names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def ensure_dev_pki(
    data_dir: Path, services: Sequence[str], hosts: Sequence[str] = ("127.0.0.1",)
) -> dict[str, CertFiles]:
    """The suite CA and a certificate per service under `<data_dir>/tls/`, made if needed."""
    directory = data_dir / TLS_DIR
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = _load_ca(directory)
    files: dict[str, CertFiles] = {}
    for service in services:
        names = [service, "localhost", "127.0.0.1", "::1", *hosts]
        cert_path = directory / f"{service}.pem"
        key_path = directory / f"{service}-key.pem"
        if not (_fresh(cert_path, ca, names) and key_path.exists()):
            cert, key = issue(ca, ca_key, service, names)
            _write_private(key_path, _key_pem(key))
            cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        files[service] = CertFiles(directory / "ca.pem", cert_path, key_path)
    return files


def dev_ca_file(data_dir: Path) -> Path:
    """Where the development CA certificate lives (the SDK/CLI trust it with --tls)."""
    return data_dir / DEV_CA_FILE
