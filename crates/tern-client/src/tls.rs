//! TLS for STARTTLS: the two client configurations and what a session
//! used.
//!
//! * [`TlsConfig::opportunistic`]: encrypt, but accept any certificate.
//!   Most mail servers present certificates a client cannot check (self
//!   signed, wrong name), and refusing them would only push the mail back
//!   to plain text. The handshake itself is checked as usual: the server
//!   must prove it holds the key of the certificate it sent (its
//!   signatures are verified with the crypto provider's algorithms), so
//!   a passive eavesdropper learns nothing.
//! * [`TlsConfig::verify`]: the certificate must chain to a CA of the
//!   given bundle ([`load_ca_file`]) and name the host connected to
//!   (the MX or relay host name, or its IP address for an IP relay).
//!
//! Both use rustls with the ring provider, TLS 1.2 and 1.3.

use std::fmt;
use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// Largest CA bundle read (Debian's whole bundle is about 200 KiB).
pub const MAX_CA_FILE: u64 = 16 * 1024 * 1024;

/// Why a TLS configuration cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// The CA bundle cannot be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// What went wrong.
        source: io::Error,
    },
    /// The CA bundle is larger than [`MAX_CA_FILE`].
    #[error("{0}: larger than 16 MiB")]
    TooLarge(String),
    /// A PEM section cannot be decoded.
    #[error("{path}: bad PEM: {hint}")]
    Pem {
        /// The file.
        path: String,
        /// The decoder's message.
        hint: String,
    },
    /// The bundle holds no usable CA certificate.
    #[error("{0}: no usable CA certificate")]
    NoCertificates(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// A client configuration and whether it verifies certificates.
#[derive(Clone)]
pub struct TlsConfig {
    config: Arc<ClientConfig>,
    verifies: bool,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("verifies", &self.verifies)
            .finish()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsConfig {
    /// Encryption without certificate checks (see the module documentation).
    ///
    /// # Errors
    /// rustls refuses the configuration (not expected with ring).
    pub fn opportunistic() -> Result<TlsConfig, TlsSetupError> {
        let provider = provider();
        let verifier = AcceptAnyCertificate {
            algorithms: provider.signature_verification_algorithms,
        };
        let config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        Ok(TlsConfig {
            config: Arc::new(config),
            verifies: false,
        })
    }

    /// Certificates must chain to one of `roots` and name the host.
    ///
    /// # Errors
    /// rustls refuses the configuration (e.g. an empty root store).
    pub fn verify(roots: RootCertStore) -> Result<TlsConfig, TlsSetupError> {
        let provider = provider();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .map_err(|e| TlsSetupError::Config(rustls::Error::General(e.to_string())))?;
        let config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_webpki_verifier(verifier)
            .with_no_client_auth();
        Ok(TlsConfig {
            config: Arc::new(config),
            verifies: true,
        })
    }

    /// True when certificates are verified.
    pub fn verifies(&self) -> bool {
        self.verifies
    }

    /// The rustls configuration.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.config.clone()
    }
}

/// Reads a PEM CA bundle (the file `control/tlsca` names). Sections other
/// than `CERTIFICATE` are skipped; certificates rustls cannot parse are
/// skipped too, but at least one must be usable.
///
/// # Errors
/// The file cannot be read, is too large, has broken PEM, or has no
/// usable certificate.
pub fn load_ca_file(path: &Path) -> Result<RootCertStore, TlsSetupError> {
    let shown = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|source| TlsSetupError::Read {
        path: shown.clone(),
        source,
    })?;
    let mut pem = Vec::new();
    file.take(MAX_CA_FILE + 1)
        .read_to_end(&mut pem)
        .map_err(|source| TlsSetupError::Read {
            path: shown.clone(),
            source,
        })?;
    if pem.len() as u64 > MAX_CA_FILE {
        return Err(TlsSetupError::TooLarge(shown));
    }
    roots_from_pem(&pem).map_err(|e| match e {
        TlsSetupError::Pem { hint, .. } => TlsSetupError::Pem { path: shown, hint },
        TlsSetupError::NoCertificates(_) => TlsSetupError::NoCertificates(shown),
        other => other,
    })
}

/// The CA certificates in PEM text.
///
/// # Errors
/// Broken PEM, or no usable certificate.
pub fn roots_from_pem(pem: &[u8]) -> Result<RootCertStore, TlsSetupError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsSetupError::Pem {
            path: String::new(),
            hint: e.to_string(),
        })?;
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(TlsSetupError::NoCertificates(String::new()));
    }
    Ok(roots)
}

/// The name checked in the server's certificate (and sent as SNI): a
/// host name, or an IP address.
///
/// # Errors
/// `host` is neither a valid DNS name nor an IP address.
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsSetupError> {
    let host = host.trim_end_matches('.');
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .map(|h| h.strip_prefix("IPv6:").unwrap_or(h))
        .unwrap_or(host);
    ServerName::try_from(host.to_string())
        .map_err(|e| TlsSetupError::Config(rustls::Error::General(format!("server name: {e}"))))
}

/// A certificate verifier for opportunistic TLS: every certificate is
/// accepted, but the handshake signatures are checked, so the peer must
/// hold the private key of the certificate it presents.
#[derive(Debug)]
struct AcceptAnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// What an established TLS session uses, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// `TLS1.3` or `TLS1.2`.
    pub protocol: String,
    /// The IANA name of the cipher suite (`TLS_AES_256_GCM_SHA384`).
    pub cipher: String,
    /// True when the certificate was verified.
    pub verified: bool,
}

impl TlsInfo {
    /// Reads protocol and cipher suite from an established connection.
    pub fn of(conn: &rustls::ClientConnection, verified: bool) -> TlsInfo {
        let (protocol, cipher) = describe(conn);
        TlsInfo {
            protocol,
            cipher,
            verified,
        }
    }
}

/// The protocol version (`TLS1.3`) and the IANA name of the cipher suite
/// (`TLS_AES_256_GCM_SHA384`) of an established connection, client or
/// server (tern-smtpd logs its sessions with it too).
pub fn describe(conn: &rustls::CommonState) -> (String, String) {
    let protocol = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLS1.3".to_string(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLS1.2".to_string(),
        Some(v) => format!("{v:?}"),
        None => "TLS".to_string(),
    };
    let cipher = conn
        .negotiated_cipher_suite()
        .map(|s| {
            let name = s
                .suite()
                .as_str()
                .map_or_else(|| format!("{:?}", s.suite()), str::to_string);
            // rustls calls the TLS 1.3 suites TLS13_*; IANA calls them TLS_*.
            match name.strip_prefix("TLS13_") {
                Some(rest) => format!("TLS_{rest}"),
                None => name,
            }
        })
        .unwrap_or_else(|| "unknown".to_string());
    (protocol, cipher)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_ca_bundles() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "NoCertificates"),
            (b"hello\n", "NoCertificates"),
            (
                b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                "NoCertificates",
            ),
            // well-formed PEM, garbage DER: not usable
            (
                b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                "NoCertificates",
            ),
            (
                b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
                "Pem",
            ),
            (b"-----BEGIN CERTIFICATE-----\nAAAA\n", "Pem"),
        ];
        for (pem, want) in cases {
            let got = match roots_from_pem(pem) {
                Ok(_) => "Ok".to_string(),
                Err(e) => format!("{e:?}"),
            };
            assert!(got.starts_with(want), "{want}: {got}");
        }
        let missing = load_ca_file(Path::new("/nonexistent/tern-ca.pem")).unwrap_err();
        assert!(matches!(missing, TlsSetupError::Read { .. }));
        assert!(
            missing
                .to_string()
                .starts_with("/nonexistent/tern-ca.pem: ")
        );
    }

    #[test]
    fn server_names() {
        for (host, ok) in [
            ("mx.example.org", true),
            ("mx.example.org.", true),
            ("192.0.2.1", true),
            ("[192.0.2.1]", true),
            ("[IPv6:2001:db8::1]", true),
            ("2001:db8::1", true),
            ("bad name", false),
            ("", false),
        ] {
            assert_eq!(server_name(host).is_ok(), ok, "{host}");
        }
    }

    #[test]
    fn configurations_build() {
        assert!(!TlsConfig::opportunistic().unwrap().verifies());
    }
}
