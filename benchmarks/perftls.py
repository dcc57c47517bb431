"""
The TLS side of the performance suite: a throw-away self-signed
certificate for C{localhost} and C{127.0.0.1}, made at run time, that the
mock upstream serves and that the proxy (through C{SSL_CERT_FILE}) and the
direct client trust.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

#: The host name the proxy's config and the direct client use.
TLS_HOST = "localhost"


def makeCertificate(directory: Path) -> tuple[Path, Path]:
    """
    A self-signed CA certificate that is also the server certificate for
    C{localhost} and C{127.0.0.1} (one day valid), and its key.

    @return: The certificate's PEM file (the one to trust) and the key's.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ccrouter perf")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName(TLS_HOST),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certificatePath = directory / "tls-cert.pem"
    keyPath = directory / "tls-key.pem"
    certificatePath.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    keyPath.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    os.chmod(keyPath, 0o600)
    return certificatePath, keyPath


def clientContext(certificate: Path) -> ssl.SSLContext:
    """
    A client context that trusts C{certificate} only and checks the host
    name, as the proxy does.
    """
    return ssl.create_default_context(cafile=str(certificate))
