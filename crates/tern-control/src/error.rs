//! The one error type of tern-control.

use std::fmt;
use std::path::{Path, PathBuf};

/// What went wrong. Content problems carry a static hint; the offending text
/// is never echoed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The file exists but cannot be read (or a directory cannot be listed).
    #[error("cannot read: {0}")]
    Io(#[source] std::io::Error),
    /// The file is larger than [`crate::MAX_FILE`] bytes.
    #[error("file larger than {} bytes", crate::MAX_FILE)]
    TooLarge,
    /// A line is longer than [`crate::MAX_LINE`] bytes.
    #[error("line longer than {} bytes", crate::MAX_LINE)]
    LineTooLong,
    /// The file is not valid UTF-8.
    #[error("not valid UTF-8")]
    NotUtf8,
    /// A required file (`me`) is missing or empty.
    #[error("required, but missing or empty")]
    Missing,
    /// A number that does not parse.
    #[error("{0}")]
    BadNumber(&'static str),
    /// A number outside the allowed range.
    #[error("number out of range (allowed: {min} to {max})")]
    OutOfRange {
        /// Smallest allowed value.
        min: u64,
        /// Largest allowed value.
        max: u64,
    },
    /// A domain, local part or mailbox that tern-addr rejects.
    #[error("bad {what}: {source}")]
    BadAddress {
        /// What was expected (`"domain"`, `"mailbox"`, ...).
        what: &'static str,
        /// tern-addr's verdict (static hint and byte offset).
        #[source]
        source: tern_addr::Error,
    },
    /// Any other syntax problem, described by a static hint.
    #[error("{0}")]
    Syntax(&'static str),
    /// `TERN_HOME` is set to something unusable.
    #[error("{0}")]
    BadHome(&'static str),
}

/// A configuration error: which file, which line (1-based, when known), and
/// what is wrong.
#[derive(Debug)]
pub struct Error {
    path: Option<PathBuf>,
    line: Option<usize>,
    kind: ErrorKind,
}

impl Error {
    pub(crate) fn new(path: &Path, line: Option<usize>, kind: ErrorKind) -> Self {
        Error {
            path: Some(path.to_path_buf()),
            line,
            kind,
        }
    }

    /// An error at a line of a text whose file is not known yet.
    pub(crate) fn at_line(line: usize, kind: ErrorKind) -> Self {
        Error {
            path: None,
            line: Some(line),
            kind,
        }
    }

    /// Names the file (for errors from parsers that saw only text).
    pub(crate) fn with_path(mut self, path: &Path) -> Self {
        self.path = Some(path.to_path_buf());
        self
    }

    pub(crate) fn without_path(kind: ErrorKind) -> Self {
        Error {
            path: None,
            line: None,
            kind,
        }
    }

    /// The file concerned, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The 1-based line number concerned, if any.
    pub fn line(&self) -> Option<usize> {
        self.line
    }

    /// What is wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// True when the file could not be read at all (I/O), as opposed to a
    /// file whose content is malformed.
    pub fn is_io(&self) -> bool {
        matches!(self.kind, ErrorKind::Io(_))
    }

    /// Always `true`: a program that cannot get its configuration must not
    /// bounce mail or refuse it permanently; it defers (4xx, exit 111) until
    /// the operator fixes the file.
    pub fn is_temporary(&self) -> bool {
        true
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = &self.path {
            write!(f, "{}: ", p.display())?;
        }
        if let Some(l) = self.line {
            write!(f, "line {l}: ")?;
        }
        write!(f, "{}", self.kind)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.kind)
    }
}
