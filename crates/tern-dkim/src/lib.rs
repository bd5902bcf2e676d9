//! DKIM signing for mail that leaves by remote delivery.
//!
//! * The key store: `control/dkim/<domain>/<selector>.key`, one private key
//!   per file (PEM: PKCS#8 `PRIVATE KEY` for RSA or Ed25519, or PKCS#1
//!   `RSA PRIVATE KEY`), readable only by the uid that signs (`ternr` in a
//!   root install). [`Keys::load`] reads them; a key that cannot be used is
//!   reported with the reason, never guessed at.
//! * The signing domain: the domain of the `From:` field, or the nearest
//!   parent domain that has keys ([`Keys::for_domain`]); a message without
//!   exactly one `From:` domain is not signed.
//! * [`Keys::sign`]: every key of that domain signs (RSA and Ed25519 side by
//!   side, as RFC 8463 suggests), relaxed/relaxed, over the message exactly
//!   as the receiver will hold it (tern-client's `received_form`), with the
//!   usual header fields signed and those that must not be added later
//!   oversigned.
//! * [`generate`]: new keys and the DNS TXT record to publish.
//!
//! Cryptography and DKIM canonicalisation are `mail-auth`'s (with `ring`);
//! nothing here parses a signature or computes a hash by hand.
#![forbid(unsafe_code)]

use std::fmt;
use std::path::{Path, PathBuf};

use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, DkimSigner};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;

/// The key store's directory, under `control/`.
pub const DKIM_DIR: &str = "dkim";
/// Largest key file read (an RSA 4096 PEM is about 3.3 KiB).
pub const MAX_KEY_FILE: u64 = 16 * 1024;
/// Most keys loaded (domains × selectors).
pub const MAX_KEYS: usize = 1000;
/// Largest message signed; a larger one goes unsigned (and is logged).
pub const MAX_SIGNED: usize = 64 * 1024 * 1024;
/// Header fields signed. Each of the first group is listed twice, so that
/// `h=` names it once more than the message has it (oversigning): nobody
/// can add another without breaking the signature.
pub const SIGNED_HEADERS: &[&str] = &[
    "From",
    "From",
    "To",
    "To",
    "Cc",
    "Cc",
    "Subject",
    "Subject",
    "Date",
    "Date",
    "Reply-To",
    "Reply-To",
    "Sender",
    "Sender",
    "Message-ID",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
];

/// A signing algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Algorithm {
    /// `rsa-sha256` (RFC 6376), 2048 bits when Tern makes the key.
    Rsa,
    /// `ed25519-sha256` (RFC 8463).
    Ed25519,
}

impl Algorithm {
    /// The `k=` value of the DNS record.
    pub fn dns_name(self) -> &'static str {
        match self {
            Algorithm::Rsa => "rsa",
            Algorithm::Ed25519 => "ed25519",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.dns_name())
    }
}

enum Signer {
    Rsa(RsaKey<Sha256>),
    Ed25519(Ed25519Key),
}

/// A key lent to one signature (mail-auth's signer owns its key; ours are
/// loaded once and sign many messages).
struct Lent<'a, K>(&'a K);

impl<K: mail_auth::common::crypto::SigningKey> mail_auth::common::crypto::SigningKey
    for Lent<'_, K>
{
    type Hasher = K::Hasher;

    fn sign(&self, input: impl mail_auth::common::headers::Writable) -> mail_auth::Result<Vec<u8>> {
        self.0.sign(input)
    }

    fn algorithm(&self) -> mail_auth::common::crypto::Algorithm {
        self.0.algorithm()
    }
}

/// One usable signing key.
pub struct Key {
    /// The signing domain (`d=`), lower case.
    pub domain: String,
    /// The selector (`s=`).
    pub selector: String,
    /// The algorithm.
    pub algorithm: Algorithm,
    /// Where it was read from.
    pub path: PathBuf,
    /// The public key as published (`p=`, before base64): the
    /// SubjectPublicKeyInfo for RSA, the raw 32 bytes for Ed25519.
    pub public: Vec<u8>,
    signer: Signer,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("domain", &self.domain)
            .field("selector", &self.selector)
            .field("algorithm", &self.algorithm)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Key {
    /// The DNS name the public key is published at.
    pub fn dns_name(&self) -> String {
        format!("{}._domainkey.{}", self.selector, self.domain)
    }

    /// The TXT record to publish at [`Key::dns_name`].
    pub fn record(&self) -> String {
        record(self.algorithm, &self.public)
    }
}

/// The TXT record for a public key.
pub fn record(algorithm: Algorithm, public: &[u8]) -> String {
    use base64ct::Encoding;
    format!(
        "v=DKIM1; k={}; p={}",
        algorithm.dns_name(),
        base64ct::Base64::encode_string(public)
    )
}

/// Why a key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// A name in the store is not a domain or not `<selector>.key`.
    #[error("{}: {why}", path.display())]
    BadName {
        /// The entry.
        path: PathBuf,
        /// What is wrong with its name.
        why: &'static str,
    },
    /// The file is not a usable private key.
    #[error("{}: {why}", path.display())]
    BadKey {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// More than [`MAX_KEYS`] keys.
    #[error("{}: more than {MAX_KEYS} keys; the rest are ignored", path.display())]
    TooMany {
        /// The store.
        path: PathBuf,
    },
}

/// Why a message was not signed although its domain has keys.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The library refused (no header fields to sign, a key failure).
    #[error("signing with {selector}._domainkey.{domain} failed: {why}")]
    Failed {
        /// The domain.
        domain: String,
        /// The selector.
        selector: String,
        /// The library's words.
        why: String,
    },
}

/// The signature header fields to put in front of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// `DKIM-Signature:` fields, folded, with LF line ends (stored form).
    pub header: Vec<u8>,
    /// The signing domain.
    pub domain: String,
    /// The selectors used, in order.
    pub selectors: Vec<String>,
}

/// Every key of the store.
#[derive(Debug, Default)]
pub struct Keys {
    keys: Vec<Key>,
}

/// True for a domain name as the store's directories may be named: lower
/// case letters, digits, hyphens and dots, labels of 1-63 octets, at most
/// 253 octets, at least two labels.
pub fn valid_domain(d: &str) -> bool {
    d.len() <= 253
        && d.contains('.')
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// True for a selector: one or more labels as in [`valid_domain`].
pub fn valid_selector(s: &str) -> bool {
    s.len() <= 63
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// Parses one PEM private key (bounded by the caller).
pub fn parse_key(pem: &[u8]) -> Result<(Algorithm, Vec<u8>, PrivateKeyDer<'static>), String> {
    let der =
        PrivateKeyDer::from_pem_slice(pem).map_err(|e| format!("not a PEM private key ({e})"))?;
    match &der {
        PrivateKeyDer::Pkcs1(_) => {
            let k = RsaKey::<Sha256>::from_key_der(der.clone_key())
                .map_err(|e| format!("not a usable RSA key ({e})"))?;
            Ok((Algorithm::Rsa, rsa_spki(&k.public_key())?, der))
        }
        PrivateKeyDer::Pkcs8(p8) => {
            if let Ok(k) = RsaKey::<Sha256>::from_key_der(der.clone_key()) {
                return Ok((Algorithm::Rsa, rsa_spki(&k.public_key())?, der));
            }
            match Ed25519Key::from_pkcs8_maybe_unchecked_der(p8.secret_pkcs8_der()) {
                Ok(k) => Ok((Algorithm::Ed25519, k.public_key(), der)),
                Err(_) => {
                    Err("a PKCS#8 key that is neither RSA (2048 bits or more) nor Ed25519".into())
                }
            }
        }
        _ => Err("an EC or other key: DKIM signs with RSA or Ed25519 only".into()),
    }
}

/// The SubjectPublicKeyInfo of an RSA public key given as PKCS#1.
fn rsa_spki(pkcs1: &[u8]) -> Result<Vec<u8>, String> {
    use rsa::pkcs1::DecodeRsaPublicKey;
    use rsa::pkcs8::EncodePublicKey;
    let public = rsa::RsaPublicKey::from_pkcs1_der(pkcs1).map_err(|e| e.to_string())?;
    public
        .to_public_key_der()
        .map(|d| d.as_bytes().to_vec())
        .map_err(|e| e.to_string())
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, KeyError> {
    use std::io::Read;
    let io = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let f = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    f.take(MAX_KEY_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_KEY_FILE {
        return Err(KeyError::BadKey {
            path: path.to_path_buf(),
            why: format!("larger than {MAX_KEY_FILE} bytes: not a key"),
        });
    }
    Ok(bytes)
}

impl Keys {
    /// Reads `control/dkim/` under `control`: the usable keys, and a
    /// reason for every entry that is not one. No store: no keys, no error.
    pub fn load(control: &Path) -> (Keys, Vec<KeyError>) {
        let store = control.join(DKIM_DIR);
        let mut keys = Vec::new();
        let mut errors = Vec::new();
        let domains = match std::fs::read_dir(&store) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return (Keys::default(), errors);
            }
            Err(source) => {
                errors.push(KeyError::Io {
                    path: store,
                    source,
                });
                return (Keys::default(), errors);
            }
        };
        let mut domain_dirs: Vec<PathBuf> = domains.flatten().map(|e| e.path()).collect();
        domain_dirs.sort();
        for dir in domain_dirs {
            let Some(domain) = dir.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
                continue;
            };
            if domain.starts_with('.') {
                continue;
            }
            if !valid_domain(&domain) {
                errors.push(KeyError::BadName {
                    path: dir,
                    why: "not a domain name in lower case: ignored",
                });
                continue;
            }
            let entries = match std::fs::read_dir(&dir) {
                Ok(d) => d,
                Err(source) => {
                    errors.push(KeyError::Io { path: dir, source });
                    continue;
                }
            };
            let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            files.sort();
            for path in files {
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if name.starts_with('.') || name.ends_with(".txt") {
                    continue;
                }
                let Some(selector) = name.strip_suffix(".key").filter(|s| valid_selector(s)) else {
                    errors.push(KeyError::BadName {
                        path,
                        why: "not <selector>.key (selector: lower-case letters, digits, hyphens, dots)",
                    });
                    continue;
                };
                if keys.len() >= MAX_KEYS {
                    errors.push(KeyError::TooMany {
                        path: store.clone(),
                    });
                    return (Keys { keys }, errors);
                }
                let selector = selector.to_string();
                let pem = match read_bounded(&path) {
                    Ok(b) => b,
                    Err(e) => {
                        errors.push(e);
                        continue;
                    }
                };
                match parse_key(&pem) {
                    Ok((algorithm, public, der)) => {
                        let signer = match algorithm {
                            Algorithm::Rsa => RsaKey::<Sha256>::from_key_der(der).map(Signer::Rsa),
                            Algorithm::Ed25519 => match &der {
                                PrivateKeyDer::Pkcs8(p8) => {
                                    Ed25519Key::from_pkcs8_maybe_unchecked_der(
                                        p8.secret_pkcs8_der(),
                                    )
                                    .map(Signer::Ed25519)
                                }
                                _ => unreachable!("parse_key gives Ed25519 for PKCS#8 only"),
                            },
                        };
                        match signer {
                            Ok(signer) => keys.push(Key {
                                domain: domain.clone(),
                                selector,
                                algorithm,
                                path,
                                public,
                                signer,
                            }),
                            Err(e) => errors.push(KeyError::BadKey {
                                path,
                                why: e.to_string(),
                            }),
                        }
                    }
                    Err(why) => errors.push(KeyError::BadKey { path, why }),
                }
            }
        }
        (Keys { keys }, errors)
    }

    /// A store of one key, from its PEM text (for tests and fuzzing; the
    /// programs read `control/dkim` with [`Keys::load`]).
    pub fn from_pem(domain: &str, selector: &str, pem: &[u8]) -> Result<Keys, String> {
        if !valid_domain(domain) || !valid_selector(selector) {
            return Err("bad domain or selector".into());
        }
        let (algorithm, public, der) = parse_key(pem)?;
        let signer = match (&der, algorithm) {
            (_, Algorithm::Rsa) => RsaKey::<Sha256>::from_key_der(der).map(Signer::Rsa),
            (PrivateKeyDer::Pkcs8(p8), Algorithm::Ed25519) => {
                Ed25519Key::from_pkcs8_maybe_unchecked_der(p8.secret_pkcs8_der())
                    .map(Signer::Ed25519)
            }
            _ => return Err("an Ed25519 key must be PKCS#8".into()),
        }
        .map_err(|e| e.to_string())?;
        Ok(Keys {
            keys: vec![Key {
                domain: domain.to_string(),
                selector: selector.to_string(),
                algorithm,
                path: PathBuf::new(),
                public,
                signer,
            }],
        })
    }

    /// Every key.
    pub fn all(&self) -> &[Key] {
        &self.keys
    }

    /// True when there is no key at all.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys that sign for `domain`: its own, else those of its nearest
    /// parent domain that has any (`mail.example.com` → `example.com`).
    pub fn for_domain(&self, domain: &str) -> Vec<&Key> {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let mut d = domain.as_str();
        loop {
            let found: Vec<&Key> = self.keys.iter().filter(|k| k.domain == d).collect();
            if !found.is_empty() {
                return found;
            }
            match d.split_once('.') {
                Some((_, parent)) if parent.contains('.') => d = parent,
                _ => return Vec::new(),
            }
        }
    }

    /// Signs `message` (the form the receiver holds: CRLF line ends, see
    /// the module documentation) with every key of its `From:` domain.
    /// `Ok(None)`: nothing to sign with (no keys for that domain, no single
    /// `From:` domain, or the message is over [`MAX_SIGNED`]).
    pub fn sign(&self, message: &[u8]) -> Result<Option<Signed>, SignError> {
        if self.keys.is_empty() || message.len() > MAX_SIGNED {
            return Ok(None);
        }
        let Some(from) = from_domain(message) else {
            return Ok(None);
        };
        let keys = self.for_domain(&from);
        let Some(first) = keys.first() else {
            return Ok(None);
        };
        let domain = first.domain.clone();
        let mut header = Vec::new();
        let mut selectors = Vec::new();
        for k in keys {
            let failed = |why: String| SignError::Failed {
                domain: k.domain.clone(),
                selector: k.selector.clone(),
                why,
            };
            let field = match &k.signer {
                Signer::Rsa(key) => DkimSigner::from_key(Lent(key))
                    .domain(&k.domain)
                    .selector(&k.selector)
                    .headers(SIGNED_HEADERS.iter().copied())
                    .header_canonicalization(Canonicalization::Relaxed)
                    .body_canonicalization(Canonicalization::Relaxed)
                    .sign(message)
                    .map(|s| s.to_header()),
                Signer::Ed25519(key) => DkimSigner::from_key(Lent(key))
                    .domain(&k.domain)
                    .selector(&k.selector)
                    .headers(SIGNED_HEADERS.iter().copied())
                    .header_canonicalization(Canonicalization::Relaxed)
                    .body_canonicalization(Canonicalization::Relaxed)
                    .sign(message)
                    .map(|s| s.to_header()),
            }
            .map_err(|e| failed(e.to_string()))?;
            // Stored form: LF line ends (the sender turns them into CRLF).
            header.extend(field.replace("\r\n", "\n").bytes());
            if !header.ends_with(b"\n") {
                header.push(b'\n');
            }
            selectors.push(k.selector.clone());
        }
        Ok(Some(Signed {
            header,
            domain,
            selectors,
        }))
    }
}

/// The domain of the message's `From:` field, lower case: `None` when
/// the header has no `From:`, more than one, an address that does not
/// parse, or mailboxes of different domains (whom would a signature speak
/// for?). `message` may have CRLF or LF line ends.
pub fn from_domain(message: &[u8]) -> Option<String> {
    use tern_msg::address::{Completion, parse_list};
    use tern_msg::header::{Header, Limits};
    let mut r = message;
    let header = Header::read(&mut r, &Limits::default()).ok()?;
    let mut froms = header.fields().filter(|f| f.is("From"));
    let field = froms.next()?;
    if froms.next().is_some() {
        return None;
    }
    let value = field.value_bounded(&Limits::default()).ok()?;
    // No completion: an unqualified From: names no domain to sign for.
    let none = Completion {
        defaulthost: Vec::new(),
        defaultdomain: Vec::new(),
        plusdomain: Vec::new(),
    };
    let boxes = parse_list(value, &none).ok()?;
    let first = boxes.first()?;
    if first.domain.is_empty()
        || boxes
            .iter()
            .any(|b| !b.domain.eq_ignore_ascii_case(&first.domain))
    {
        return None;
    }
    let d = std::str::from_utf8(&first.domain)
        .ok()?
        .to_ascii_lowercase();
    valid_domain(d.trim_end_matches('.')).then(|| d.trim_end_matches('.').to_string())
}

/// A new private key (PEM, PKCS#8) and its public key (as [`Key::public`]).
pub fn generate(algorithm: Algorithm) -> Result<(String, Vec<u8>), String> {
    match algorithm {
        Algorithm::Rsa => {
            use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
            let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048)
                .map_err(|e| format!("cannot make an RSA key: {e}"))?;
            let pem = private
                .to_pkcs8_pem(LineEnding::LF)
                .map_err(|e| e.to_string())?;
            let public = private
                .to_public_key()
                .to_public_key_der()
                .map_err(|e| e.to_string())?;
            Ok((pem.to_string(), public.as_bytes().to_vec()))
        }
        Algorithm::Ed25519 => {
            let der = Ed25519Key::generate_pkcs8().map_err(|e| e.to_string())?;
            let key = Ed25519Key::from_pkcs8_der(&der).map_err(|e| e.to_string())?;
            let pem = rsa::pkcs8::der::pem::encode_string(
                "PRIVATE KEY",
                rsa::pkcs8::LineEnding::LF,
                &der,
            )
            .map_err(|e| e.to_string())?;
            Ok((pem, key.public_key()))
        }
    }
}

#[cfg(test)]
mod tests;
