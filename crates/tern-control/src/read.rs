//! Reading control files: bounds, UTF-8, and qmail's line rules.

use std::io::Read;
use std::path::Path;

use crate::error::{Error, ErrorKind};

/// Largest control file accepted, in bytes (1 MiB).
pub const MAX_FILE: u64 = 1 << 20;
/// Longest line accepted in a control file, in bytes (without the newline).
pub const MAX_LINE: usize = 4096;

/// Reads a whole file of at most `max` bytes. A missing file is `Ok(None)`.
pub(crate) fn read_bounded(path: &Path, max: u64) -> Result<Option<Vec<u8>>, Error> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::new(path, None, ErrorKind::Io(e))),
    };
    let mut buf = Vec::new();
    // Read one byte more than allowed to detect an over-long file without
    // trusting its size in metadata (it may grow while we read).
    file.take(max + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::new(path, None, ErrorKind::Io(e)))?;
    if buf.len() as u64 > max {
        return Err(Error::new(path, None, ErrorKind::TooLarge));
    }
    Ok(Some(buf))
}

/// Validates a file's bytes: UTF-8, no NUL, no line longer than
/// [`MAX_LINE`]. Errors name the 1-based line.
pub(crate) fn validate_text(path: &Path, bytes: Vec<u8>) -> Result<String, Error> {
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        if line.len() > MAX_LINE {
            return Err(Error::new(path, Some(i + 1), ErrorKind::LineTooLong));
        }
        if line.contains(&0) {
            return Err(Error::new(path, Some(i + 1), ErrorKind::Syntax("NUL byte")));
        }
        if std::str::from_utf8(line).is_err() {
            return Err(Error::new(path, Some(i + 1), ErrorKind::NotUtf8));
        }
    }
    // Every line is valid UTF-8 and '\n' is ASCII, so the whole is too.
    String::from_utf8(bytes).map_err(|_| Error::new(path, None, ErrorKind::NotUtf8))
}

/// Reads a control file: `Ok(None)` when missing, else its validated text.
pub(crate) fn read_control(path: &Path) -> Result<Option<String>, Error> {
    match read_bounded(path, MAX_FILE)? {
        None => Ok(None),
        Some(bytes) => validate_text(path, bytes).map(Some),
    }
}

/// Strips trailing spaces, tabs and CRs (qmail strips trailing white space).
pub(crate) fn strip_end(line: &str) -> &str {
    line.trim_end_matches([' ', '\t', '\r'])
}

/// A single-value file's value: its first line, trailing white space
/// stripped; `None` when that is empty (an empty file counts as not set).
pub(crate) fn first_line(text: &str) -> Option<&str> {
    let line = strip_end(text.split('\n').next().unwrap_or(""));
    if line.is_empty() { None } else { Some(line) }
}

/// A list file's entries with their 1-based line numbers: trailing white
/// space stripped, empty lines and lines starting with `#` skipped.
pub(crate) fn list_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.split('\n')
        .enumerate()
        .map(|(i, l)| (i + 1, strip_end(l)))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    #[test]
    fn bad_files() {
        let p = Path::new("control/x");
        let long = format!("ok\n{}\n", "a".repeat(MAX_LINE + 1));
        let cases: Vec<(Vec<u8>, usize, &str)> = vec![
            (long.into_bytes(), 2, "line longer than 4096 bytes"),
            (b"a\nb\xff\n".to_vec(), 2, "not valid UTF-8"),
            (b"a\0b".to_vec(), 1, "NUL byte"),
        ];
        for (bytes, line, msg) in cases {
            let e = validate_text(p, bytes).unwrap_err();
            assert_eq!(e.line(), Some(line));
            assert_eq!(e.to_string(), format!("control/x: line {line}: {msg}"));
        }
        let max = "a".repeat(MAX_LINE);
        assert!(validate_text(p, max.into_bytes()).is_ok());
    }

    #[test]
    fn bounded_read() {
        let t = TempDir::new();
        let big = t.path().join("big");
        std::fs::write(&big, vec![b'a'; MAX_FILE as usize + 1]).unwrap();
        assert!(matches!(
            read_control(&big).unwrap_err().kind(),
            ErrorKind::TooLarge
        ));
        std::fs::write(&big, vec![b'\n'; MAX_FILE as usize]).unwrap();
        assert!(read_control(&big).unwrap().is_some());
        assert!(read_control(&t.path().join("missing")).unwrap().is_none());
        // a directory where a file is expected is an I/O error, not "missing"
        let e = read_control(t.path()).unwrap_err();
        assert!(e.is_io());
    }

    #[test]
    fn line_rules() {
        assert_eq!(
            first_line("host.example \t\r\nsecond\n"),
            Some("host.example")
        );
        assert_eq!(first_line(""), None);
        assert_eq!(first_line("  \nsecond"), None);
        let got: Vec<_> = list_lines("a\n\n# comment\n  \nb \r\n#\nc").collect();
        assert_eq!(got, vec![(1, "a"), (5, "b"), (7, "c")]);
    }
}
