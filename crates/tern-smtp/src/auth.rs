//! SMTP AUTH (RFC 4954) pieces without state: strict base64 (RFC 4648
//! section 4, no line breaks, no whitespace, canonical padding), the PLAIN
//! message (RFC 4616) and the credentials handed to the program.
//!
//! Bounds: an AUTH line is a command line, so at most
//! [`crate::line::MAX_COMMAND`] bytes; decoded values are bounded by
//! [`MAX_LOGIN`] and [`MAX_PASSWORD`].

/// Longest login accepted.
pub const MAX_LOGIN: usize = 255;

/// Longest password accepted.
pub const MAX_PASSWORD: usize = 255;

/// Why an AUTH exchange is refused before any password check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Not base64, or not canonical base64.
    #[error("bad base64 in AUTH data")]
    BadBase64,
    /// The client sent `*`.
    #[error("authentication cancelled")]
    Cancelled,
    /// The PLAIN message is not `authzid NUL authcid NUL password`.
    #[error("malformed PLAIN credentials")]
    BadPlain,
    /// An authorization identity other than the login.
    #[error("authorization identity must be empty or the login")]
    Authzid,
    /// Empty login, or a login or password that is too long or holds a
    /// NUL byte.
    #[error("bad login or password length")]
    BadLength,
    /// A mechanism other than PLAIN and LOGIN.
    #[error("mechanism not supported (PLAIN, LOGIN)")]
    Mechanism,
}

impl AuthError {
    /// The reply code and enhanced status code for this error.
    pub fn reply_code(self) -> (u16, &'static str) {
        match self {
            AuthError::Cancelled => (501, "5.0.0"),
            AuthError::Mechanism => (504, "5.5.4"),
            _ => (501, "5.5.2"),
        }
    }
}

/// A login and password to check. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The login (authentication identity).
    pub login: Vec<u8>,
    /// The password.
    pub password: Vec<u8>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("login", &String::from_utf8_lossy(&self.login))
            .field("password", &"(hidden)")
            .finish()
    }
}

impl Credentials {
    /// Checks the bounds: a login of 1 to [`MAX_LOGIN`] bytes, a password
    /// of at most [`MAX_PASSWORD`] bytes, no NUL in either (the
    /// checkpassword interface separates them with NULs).
    ///
    /// # Errors
    /// [`AuthError::BadLength`].
    pub fn new(login: Vec<u8>, password: Vec<u8>) -> Result<Credentials, AuthError> {
        if login.is_empty()
            || login.len() > MAX_LOGIN
            || password.len() > MAX_PASSWORD
            || login.contains(&0)
            || password.contains(&0)
        {
            return Err(AuthError::BadLength);
        }
        Ok(Credentials { login, password })
    }
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn value(b: u8) -> Option<u8> {
    match b {
        b'A'..=b'Z' => Some(b - b'A'),
        b'a'..=b'z' => Some(b - b'a' + 26),
        b'0'..=b'9' => Some(b - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

/// Base64 of `bytes`, padded.
pub fn encode_base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let b = [
            group[0],
            group.get(1).copied().unwrap_or(0),
            group.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= group.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes strict base64: the length is a multiple of 4, `=` only as
/// the last one or two characters, the unused bits of the last group zero.
/// The lone `=` is RFC 4954's empty response and decodes to nothing.
///
/// # Errors
/// [`AuthError::BadBase64`].
pub fn decode_base64(text: &[u8]) -> Result<Vec<u8>, AuthError> {
    if text == b"=" {
        return Ok(Vec::new());
    }
    if !text.len().is_multiple_of(4) {
        return Err(AuthError::BadBase64);
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let groups = text.len() / 4;
    for (i, g) in text.chunks(4).enumerate() {
        let last = i + 1 == groups;
        let pad = g.iter().rev().take_while(|&&b| b == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return Err(AuthError::BadBase64);
        }
        let mut n: u32 = 0;
        for &b in &g[..4 - pad] {
            n = (n << 6) | u32::from(value(b).ok_or(AuthError::BadBase64)?);
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        let keep = 3 - pad;
        // Non-canonical: bits beyond the kept bytes must be zero.
        if bytes[keep..].iter().any(|&b| b != 0) {
            return Err(AuthError::BadBase64);
        }
        out.extend_from_slice(&bytes[..keep]);
    }
    Ok(out)
}

/// Parses a decoded PLAIN message: `[authzid] NUL login NUL password`.
/// The authorization identity must be empty or equal to the login
/// (Tern does not let one user act as another).
///
/// # Errors
/// [`AuthError::BadPlain`], [`AuthError::Authzid`], [`AuthError::BadLength`].
pub fn parse_plain(message: &[u8]) -> Result<Credentials, AuthError> {
    let mut parts = message.splitn(3, |&b| b == 0);
    let (Some(authzid), Some(login), Some(password)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::BadPlain);
    };
    if !authzid.is_empty() && authzid != login {
        return Err(AuthError::Authzid);
    }
    Credentials::new(login.to_vec(), password.to_vec())
}

/// Decodes one client response line: `*` cancels, anything else must be
/// strict base64.
///
/// # Errors
/// [`AuthError::Cancelled`], [`AuthError::BadBase64`].
pub fn response(line: &[u8]) -> Result<Vec<u8>, AuthError> {
    if line == b"*" {
        return Err(AuthError::Cancelled);
    }
    decode_base64(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_base64_is_refused() {
        for bad in [
            &b"a"[..],
            b"ab",
            b"abc",
            b"ab=c",
            b"a===",
            b"====",
            b"ab==cd==",
            b"YWJj ZGVm",
            b"YW\tJ",
            b"YWJ\xff",
            b"Zm9vYg=",
            b"Zh==", // non-canonical: unused bits set
            b"Zm9=", // non-canonical
            b"Zm9vYmFy\r\n",
            b"-_==",
        ] {
            assert_eq!(
                decode_base64(bad),
                Err(AuthError::BadBase64),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn base64_round_trip() {
        assert_eq!(decode_base64(b"").unwrap(), b"");
        assert_eq!(decode_base64(b"=").unwrap(), b"");
        for (plain, enc) in [
            (&b"f"[..], "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"fooba", "Zm9vYmE="),
            (b"foobar", "Zm9vYmFy"),
            (b"Username:", "VXNlcm5hbWU6"),
            (b"\0joe\0secret", "AGpvZQBzZWNyZXQ="),
            (b"\xff\xfe\xfd", "//79"),
        ] {
            assert_eq!(encode_base64(plain), enc);
            assert_eq!(decode_base64(enc.as_bytes()).unwrap(), plain);
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(decode_base64(encode_base64(&all).as_bytes()).unwrap(), all);
    }

    #[test]
    fn bad_plain_messages() {
        let long = vec![b'a'; MAX_LOGIN + 1];
        let mut too_long_login = b"\0".to_vec();
        too_long_login.extend_from_slice(&long);
        too_long_login.extend_from_slice(b"\0pw");
        let mut too_long_pw = b"\0joe\0".to_vec();
        too_long_pw.extend_from_slice(&vec![b'p'; MAX_PASSWORD + 1]);
        for (bad, err) in [
            (&b""[..], AuthError::BadPlain),
            (b"joe", AuthError::BadPlain),
            (b"\0joe", AuthError::BadPlain),
            (b"\0\0pw", AuthError::BadLength),
            (b"ann\0joe\0pw", AuthError::Authzid),
            (b"\0joe\0p\0w", AuthError::BadLength),
            (&too_long_login, AuthError::BadLength),
            (&too_long_pw, AuthError::BadLength),
        ] {
            assert_eq!(parse_plain(bad), Err(err), "{bad:?}");
        }
    }

    #[test]
    fn good_plain_messages() {
        let c = parse_plain(b"\0joe\0secret").unwrap();
        assert_eq!(
            (&c.login[..], &c.password[..]),
            (&b"joe"[..], &b"secret"[..])
        );
        let c = parse_plain(b"joe\0joe\0").unwrap();
        assert_eq!(c.password, b"");
        assert!(!format!("{c:?}").contains("secret"));
        let c = parse_plain(b"\0joe\0secret").unwrap();
        assert!(!format!("{c:?}").contains("secret"));
    }

    #[test]
    fn responses() {
        assert_eq!(response(b"*"), Err(AuthError::Cancelled));
        assert_eq!(response(b"**"), Err(AuthError::BadBase64));
        assert_eq!(response(b"am9l").unwrap(), b"joe");
        assert_eq!(AuthError::Cancelled.reply_code(), (501, "5.0.0"));
        assert_eq!(AuthError::BadBase64.reply_code(), (501, "5.5.2"));
    }
}
