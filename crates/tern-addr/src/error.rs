//! The one error type of tern-addr.

/// What is wrong with a rejected address. Each kind has a static hint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Nothing was given.
    Empty,
    /// The whole domain is longer than [`crate::MAX_DOMAIN`].
    DomainTooLong,
    /// One label is longer than [`crate::MAX_LABEL`].
    LabelTooLong,
    /// Two dots in a row, or a leading or trailing dot.
    EmptyLabel,
    /// A label starts or ends with `-`.
    HyphenAtLabelEdge,
    /// A byte that is not allowed in a domain.
    BadDomainChar,
    /// A non-ASCII byte where only ASCII is allowed.
    NonAscii,
    /// Bytes that are not valid UTF-8.
    InvalidUtf8,
    /// An address literal `[...]` that is not a valid IPv4 or IPv6 address.
    BadAddressLiteral,
    /// The local part is longer than [`crate::MAX_LOCAL_PART`].
    LocalPartTooLong,
    /// A byte that is not allowed in a dot-atom local part.
    BadLocalChar,
    /// A leading, trailing or doubled dot in a dot-atom local part.
    BadDot,
    /// A quoted local part that is not closed, or has text after the quote.
    BadQuoting,
    /// A byte that is not allowed inside a quoted string.
    BadQuotedChar,
    /// A mailbox without `@`.
    NoAt,
    /// The mailbox is longer than [`crate::MAX_MAILBOX`].
    MailboxTooLong,
}

impl ErrorKind {
    /// A short, static description of the problem.
    pub fn hint(self) -> &'static str {
        match self {
            ErrorKind::Empty => "empty",
            ErrorKind::DomainTooLong => "domain longer than 255 bytes",
            ErrorKind::LabelTooLong => "domain label longer than 63 bytes",
            ErrorKind::EmptyLabel => "empty domain label (leading, trailing or double dot)",
            ErrorKind::HyphenAtLabelEdge => "domain label starts or ends with '-'",
            ErrorKind::BadDomainChar => "character not allowed in a domain",
            ErrorKind::NonAscii => "non-ASCII character not allowed here",
            ErrorKind::InvalidUtf8 => "invalid UTF-8",
            ErrorKind::BadAddressLiteral => "address literal is not a valid IPv4 or IPv6 address",
            ErrorKind::LocalPartTooLong => "local part longer than 255 bytes",
            ErrorKind::BadLocalChar => "character not allowed in a local part",
            ErrorKind::BadDot => "leading, trailing or double dot in local part",
            ErrorKind::BadQuoting => "badly quoted local part",
            ErrorKind::BadQuotedChar => "character not allowed in a quoted local part",
            ErrorKind::NoAt => "no '@' in mailbox",
            ErrorKind::MailboxTooLong => "mailbox longer than 511 bytes",
        }
    }
}

/// A rejected address: what is wrong and at which byte offset of the input.
/// The input itself is never stored or displayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{} (at byte {offset})", kind.hint())]
pub struct Error {
    kind: ErrorKind,
    offset: usize,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, offset: usize) -> Self {
        Error { kind, offset }
    }

    /// The same error with its offset moved by `by` bytes: for callers that
    /// parsed a part of a larger input (e.g. the domain after `@`).
    #[must_use]
    pub fn shifted(self, by: usize) -> Self {
        Error {
            kind: self.kind,
            offset: self.offset + by,
        }
    }

    /// What is wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Byte offset in the input where the problem was found.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// A static description of the problem.
    pub fn hint(&self) -> &'static str {
        self.kind.hint()
    }

    /// Always `false`: a malformed address stays malformed.
    pub fn is_temporary(&self) -> bool {
        false
    }
}
