"""A local CA, made on first start, so an unmodified fal-client reaches us over HTTPS.

The client trusts it through ``SSL_CERT_FILE``, pointed at a bundle holding the
public CAs (certifi) plus ours, so real hosts still verify in the same process.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

import certifi
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class TLSFiles:
    ca_cert: Path
    server_cert: Path
    server_key: Path
    bundle: Path  # certifi's public CAs + our CA: the value for SSL_CERT_FILE


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def ensure_tls(
    state_dir: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost", "::1")
) -> TLSFiles:
    """Create (once) a CA and a server certificate for ``hosts`` under ``state_dir``."""
    state_dir.mkdir(parents=True, exist_ok=True)
    files = TLSFiles(
        state_dir / "ca.pem",
        state_dir / "server.pem",
        state_dir / "server.key",
        state_dir / "ca-bundle.pem",
    )
    sans = sorted(set(hosts))
    marker = state_dir / "hosts.txt"
    if all(
        p.exists() for p in (files.ca_cert, files.server_cert, files.server_key, files.bundle)
    ) and (marker.exists() and marker.read_text() == ",".join(sans)):
        return files

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("wansweep local fal CA"))
        .issuer_name(_name("wansweep local fal CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    alt: list[x509.GeneralName] = []
    for h in sans:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            alt.append(x509.DNSName(h))
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("wansweep local fal server"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    files.ca_cert.write_bytes(ca_pem)
    files.server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + ca_pem)
    files.server_key.write_bytes(_pem_key(key))
    files.server_key.chmod(0o600)
    files.bundle.write_bytes(Path(certifi.where()).read_bytes() + b"\n" + ca_pem)
    marker.write_text(",".join(sans))
    return files
