//! tern-smtpd's exit codes.

use std::process::ExitCode;

/// Why tern-smtpd ended. The code tells a launcher (tcpserver, inetd,
/// systemd, tern-listen) how the connection went; nothing depends on it
/// for mail safety: a message is either queued (and acknowledged) or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// 0: the client sent QUIT, or closed the connection between commands.
    Done = 0,
    /// 100: usage error (an unexpected argument).
    Usage = 100,
    /// 111: temporary trouble: the configuration could not be read (or
    /// `control/rcpthosts` is missing), or reading fd 0 / writing fd 1
    /// failed.
    Trouble = 111,
    /// 112: the client was silent for `timeoutsmtpd` seconds (421 sent).
    Timeout = 112,
    /// 113: closed by the server for a protocol violation: bare CR or LF in
    /// a command or in a message, too many errors (tarpit, 421 sent), or a
    /// third failed AUTH (421 sent).
    Refused = 113,
    /// 114: the client closed the connection in the middle of a command
    /// line or a message (nothing of that message is queued).
    Lost = 114,
    /// 115: the TLS handshake failed, or the client sent bad TLS records.
    Tls = 115,
}

impl Exit {
    /// The numeric code.
    pub(crate) fn code(self) -> u8 {
        self as u8
    }

    /// A short name for the log.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Exit::Done => "done",
            Exit::Usage => "usage",
            Exit::Trouble => "trouble",
            Exit::Timeout => "timeout",
            Exit::Refused => "refused",
            Exit::Lost => "lost",
            Exit::Tls => "tls",
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e.code())
    }
}
