//! TLS: the server configuration from `control/servercert.pem`.
//!
//! The file holds the certificate chain (server certificate first) and the
//! private key, PEM, in one file (the name and layout of the qmail TLS
//! patch), so that a renewed certificate is replaced with one `rename` and
//! a connection never sees a new chain with an old key. It is read for
//! every connection (each connection is its own process): a renewed
//! certificate needs no restart. TLS 1.2 and 1.3 only (rustls with ring).

use std::fmt;
use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The file in `control/`.
pub(crate) const CERT_FILE: &str = "servercert.pem";

/// Largest certificate file read (a chain of a few certificates and a key
/// is a few KiB).
const MAX_PEM: u64 = 1024 * 1024;

/// Why the certificate file cannot be used.
#[derive(Debug)]
pub(crate) enum CertError {
    /// Opening or reading the file failed (not "missing": that is no TLS).
    Read(io::Error),
    /// The file is larger than [`MAX_PEM`].
    TooLarge,
    /// A PEM section could not be decoded.
    Pem(String),
    /// No `CERTIFICATE` section.
    NoCertificate,
    /// No private key section (PKCS#8, PKCS#1 or SEC1).
    NoKey,
    /// rustls refused the chain and key (e.g. the key does not match).
    Config(rustls::Error),
}

impl fmt::Display for CertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertError::Read(e) => write!(f, "control/{CERT_FILE}: {e}"),
            CertError::TooLarge => write!(f, "control/{CERT_FILE}: larger than {MAX_PEM} bytes"),
            CertError::Pem(e) => write!(f, "control/{CERT_FILE}: bad PEM: {e}"),
            CertError::NoCertificate => write!(f, "control/{CERT_FILE}: no CERTIFICATE"),
            CertError::NoKey => write!(f, "control/{CERT_FILE}: no PRIVATE KEY"),
            CertError::Config(e) => write!(f, "control/{CERT_FILE}: {e}"),
        }
    }
}

/// The server configuration from the PEM bytes of the file.
pub(crate) fn config(pem: &[u8]) -> Result<Arc<ServerConfig>, CertError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::Pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(CertError::NoCertificate);
    }
    let key = match PrivateKeyDer::from_pem_slice(pem) {
        Ok(k) => k,
        Err(rustls::pki_types::pem::Error::NoItemsFound) => return Err(CertError::NoKey),
        Err(e) => return Err(CertError::Pem(e.to_string())),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(CertError::Config)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(CertError::Config)?;
    Ok(Arc::new(config))
}

/// Reads `control/servercert.pem` in `control_dir`: `Ok(None)` when the
/// file does not exist (no TLS offered).
pub(crate) fn load(control_dir: &Path) -> Result<Option<Arc<ServerConfig>>, CertError> {
    let file = match std::fs::File::open(control_dir.join(CERT_FILE)) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(CertError::Read(e)),
    };
    let mut pem = Vec::new();
    file.take(MAX_PEM + 1)
        .read_to_end(&mut pem)
        .map_err(CertError::Read)?;
    if pem.len() as u64 > MAX_PEM {
        return Err(CertError::TooLarge);
    }
    config(&pem).map(Some)
}

/// The protocol version and cipher suite of an established connection,
/// IANA names: `TLS1.3 TLS_AES_256_GCM_SHA384`.
pub(crate) fn describe(conn: &rustls::ServerConnection) -> String {
    let (version, suite) = tern_client::tls::describe(conn);
    format!("{version} {suite}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_files_are_typed_errors() {
        let cert_only = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let key_only = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        let cases: &[(&[u8], &str)] = &[
            (b"", "NoCertificate"),
            (b"hello\n", "NoCertificate"),
            (key_only, "NoCertificate"),
            (cert_only, "NoKey"),
            (
                b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
                "Pem",
            ),
            (b"-----BEGIN CERTIFICATE-----\nAAAA\n", "Pem"),
            // A well-formed PEM whose DER is garbage: rustls refuses it.
            (&[&cert_only[..], &key_only[..]].concat(), "Config"),
        ];
        for (pem, want) in cases {
            let got = match config(pem) {
                Ok(_) => "Ok".to_string(),
                Err(e) => format!("{e:?}"),
            };
            assert!(
                got.starts_with(want),
                "{:?}: {got}",
                String::from_utf8_lossy(pem)
            );
        }
    }

    #[test]
    fn missing_file_is_no_tls_and_large_file_is_refused() {
        let dir = std::env::temp_dir().join(format!("tern-smtpd-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(matches!(load(&dir), Ok(None)));
        std::fs::write(dir.join(CERT_FILE), vec![b'a'; MAX_PEM as usize + 1]).unwrap();
        assert!(matches!(load(&dir), Err(CertError::TooLarge)));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
