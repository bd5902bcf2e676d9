//! The qmail-queue exit codes, as `tern-queue` produces them and as
//! [`crate::QueueClient`] reads them from any queue program.

/// `tern-queue`'s exit status: qmail-queue's codes, plus 12 and 13 for Tern's
/// recipient-count and envelope-size limits (in qmail's permanent range
/// 11..=40, so qmail-era callers bounce rather than retry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum QueueExit {
    /// The message is queued durably.
    Queued = 0,
    /// An envelope address is longer than [`crate::MAX_ADDRESS`] bytes.
    AddressTooLong = 11,
    /// More than [`crate::MAX_RECIPIENTS`] recipients.
    TooManyRecipients = 12,
    /// The envelope is longer than [`crate::MAX_ENVELOPE`] bytes.
    EnvelopeTooLarge = 13,
    /// Out of memory (an allocation failed).
    OutOfMemory = 51,
    /// The whole injection took longer than the self-destruct timeout.
    Timeout = 52,
    /// A write to the queue failed (disk full, quota, I/O error).
    WriteFailed = 53,
    /// The message or the envelope could not be read, or the envelope ended
    /// before its final `\0`.
    ReadFailed = 54,
    /// The instance home could not be entered.
    HomeTrouble = 61,
    /// `queue/` could not be opened, or `queue/format` is missing or wrong.
    QueueDirTrouble = 62,
    /// No file could be created in the queue (`queue/tmp`).
    TmpTrouble = 63,
    /// The message could not be linked into `queue/new/<split>/`.
    NewDirTrouble = 64,
    /// The new-message directory could not be synced after the link.
    SyncTrouble = 65,
    /// An internal bug (a panic or a crash signal).
    Bug = 81,
    /// The envelope is not in `F...\0T...\0\0` form.
    BadEnvelope = 91,
}

impl QueueExit {
    /// The numeric exit status.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// All codes `tern-queue` can produce (for documentation tests).
    pub const ALL: [QueueExit; 15] = [
        QueueExit::Queued,
        QueueExit::AddressTooLong,
        QueueExit::TooManyRecipients,
        QueueExit::EnvelopeTooLarge,
        QueueExit::OutOfMemory,
        QueueExit::Timeout,
        QueueExit::WriteFailed,
        QueueExit::ReadFailed,
        QueueExit::HomeTrouble,
        QueueExit::QueueDirTrouble,
        QueueExit::TmpTrouble,
        QueueExit::NewDirTrouble,
        QueueExit::SyncTrouble,
        QueueExit::Bug,
        QueueExit::BadEnvelope,
    ];
}

/// What an exit status of a queue program (tern-queue, qmail-queue, or a
/// `QMAILQUEUE` filter) means: a one-line text with its enhanced status code,
/// and whether it is temporary. Codes 11..=40 are permanent; every other
/// non-zero code, known or not, is temporary (an unknown failure is retried,
/// never bounced).
pub fn describe(code: i32) -> (&'static str, bool) {
    match code {
        0 => ("queued", false),
        11 => ("envelope address too long for qq (#5.1.3)", false),
        12 => ("too many recipients for qq (#5.5.3)", false),
        13 => ("envelope too large for qq (#5.3.4)", false),
        31 => ("mail server permanently rejected message (#5.3.0)", false),
        51 => ("qq out of memory (#4.3.0)", true),
        52 => ("qq timeout (#4.3.0)", true),
        53 => ("qq write error or disk full (#4.3.0)", true),
        54 => ("qq read error (#4.3.0)", true),
        55 => ("qq unable to read configuration (#4.3.0)", true),
        56 => ("qq trouble making network connection (#4.3.0)", true),
        61 => ("qq trouble in home directory (#4.3.0)", true),
        62 => ("qq trouble with the queue directory (#4.3.0)", true),
        63 => ("qq trouble creating files in queue (#4.3.0)", true),
        64 => ("qq trouble linking message into queue (#4.3.0)", true),
        65 => ("qq trouble syncing queue directory (#4.3.0)", true),
        66 => ("qq trouble with queue directories (#4.3.0)", true),
        71 => ("mail server temporarily rejected message (#4.3.0)", true),
        72 => ("connection to mail server timed out (#4.4.1)", true),
        73 => ("connection to mail server rejected (#4.4.1)", true),
        74 => (
            "connection to mail server succeeded, but communication failed (#4.4.2)",
            true,
        ),
        81 => ("qq internal bug (#4.3.0)", true),
        91 => ("qq envelope format error (#4.3.0)", true),
        120 => ("unable to exec qq (#4.3.0)", true),
        14..=30 | 32..=40 => ("qq permanent problem (#5.3.0)", false),
        _ => ("qq temporary problem (#4.3.0)", true),
    }
}

impl QueueExit {
    /// The exit code for an envelope that could not be read.
    pub fn for_envelope(e: &crate::envelope::EnvelopeError) -> QueueExit {
        use crate::envelope::EnvelopeError;
        match e {
            EnvelopeError::AddressTooLong => QueueExit::AddressTooLong,
            EnvelopeError::TooManyRecipients => QueueExit::TooManyRecipients,
            EnvelopeError::TooLarge => QueueExit::EnvelopeTooLarge,
            EnvelopeError::Format { .. } => QueueExit::BadEnvelope,
            EnvelopeError::OutOfMemory => QueueExit::OutOfMemory,
            _ => QueueExit::ReadFailed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert!(!describe(11).1);
        assert!(!describe(12).1);
        assert!(!describe(13).1);
        assert!(!describe(40).1);
        assert!(describe(41).1);
        assert!(describe(53).1);
        assert!(describe(91).1);
        assert!(describe(200).1);
        assert!(describe(-1).1);
        for e in QueueExit::ALL {
            let (text, _) = describe(e.code() as i32);
            assert!(!text.contains("problem"), "{e:?} has a generic text");
        }
    }
}
