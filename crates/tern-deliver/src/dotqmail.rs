//! The dot-qmail file format: one delivery instruction per line.
//!
//! [`parse`] turns the bytes of a `.qmail` file (or of the
//! `defaultdelivery` setting) into [`Line`]s. It does no I/O, holds fixed
//! bounds ([`MAX_FILE`], [`MAX_LINE`], [`MAX_LINES`]) and reports each bad
//! input as a [`ParseError`] with a line number and a static hint, never
//! the rejected bytes.
//!
//! | first byte | instruction |
//! |---|---|
//! | `#` | comment (ignored) |
//! | `\|` | [`Instruction::Program`]: the rest is run by `/bin/sh -c` |
//! | `/` or `.`, line ending in `/` | [`Instruction::Maildir`] |
//! | `/` or `.`, otherwise | [`Instruction::Mbox`] |
//! | `&` | [`Instruction::Forward`] to the address after the `&` |
//! | anything else | [`Instruction::Forward`] to the whole line |
//!
//! Spaces, tabs and carriage returns at the end of a line are ignored
//! (qmail ignores spaces and tabs; a CR is dropped too so that a file
//! saved with CRLF line ends does not name a mailbox ending in CR). Blank
//! lines are ignored, except that a blank first line is an error (qmail's
//! rule: it is usually a file truncated while being edited).

use std::fmt;

/// Largest accepted file, in bytes.
pub const MAX_FILE: usize = 64 * 1024;
/// Longest accepted line, in bytes, without its line end.
pub const MAX_LINE: usize = 1000;
/// Most lines accepted in one file (comments and blank lines included).
pub const MAX_LINES: usize = 1000;

/// One delivery instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    /// `|command`: the command text after the `|`.
    Program(Vec<u8>),
    /// A Maildir directory path (ends in `/`), relative to the home
    /// directory when it starts with `.`.
    Maildir(Vec<u8>),
    /// An mbox file path, relative to the home directory when it starts
    /// with `.`.
    Mbox(Vec<u8>),
    /// `&address` or a plain address: the address.
    Forward(Vec<u8>),
    /// `+list`: qmail's mailing-list flag; from this line on the file may
    /// only forward (as if the owner-execute bit were set). Other `+` lines
    /// are flags qmail ignores, and are skipped here too: a `+` line is
    /// never an address.
    ListFlag,
}

impl Instruction {
    /// True for instructions a forward-only file (owner-execute bit set)
    /// may not contain.
    pub fn is_local(&self) -> bool {
        !matches!(self, Instruction::Forward(_) | Instruction::ListFlag)
    }
}

/// An instruction and the line (1-based) it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Line number in the file, from 1.
    pub number: usize,
    /// What the line asks for.
    pub instruction: Instruction,
}

/// What is wrong with a dot-qmail file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseErrorKind {
    /// The file is larger than [`MAX_FILE`].
    TooLarge,
    /// The file has more than [`MAX_LINES`] lines.
    TooManyLines,
    /// A line is longer than [`MAX_LINE`].
    LineTooLong,
    /// The first line is blank.
    FirstLineBlank,
    /// A line holds a NUL byte.
    Nul,
    /// A `|` line with no command.
    EmptyProgram,
    /// A `&` line with no address.
    EmptyForward,
    /// A forward address holds a control character.
    ControlInAddress,
    /// A forward address starts with white space.
    SpaceInAddress,
    /// A Maildir or mbox path holds a control character.
    ControlInPath,
}

impl ParseErrorKind {
    /// A short description, in words.
    pub fn hint(self) -> &'static str {
        match self {
            ParseErrorKind::TooLarge => "file is larger than 65536 bytes",
            ParseErrorKind::TooManyLines => "file has more than 1000 lines",
            ParseErrorKind::LineTooLong => "line is longer than 1000 bytes",
            ParseErrorKind::FirstLineBlank => "first line is blank",
            ParseErrorKind::Nul => "line contains a NUL byte",
            ParseErrorKind::EmptyProgram => "program line has no command",
            ParseErrorKind::EmptyForward => "forward line has no address",
            ParseErrorKind::ControlInAddress => "forward address contains a control character",
            ParseErrorKind::SpaceInAddress => "forward address starts with white space",
            ParseErrorKind::ControlInPath => "mailbox path contains a control character",
        }
    }
}

/// A bad dot-qmail file: what is wrong and on which line (0 for the whole
/// file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseError {
    /// What is wrong.
    pub kind: ParseErrorKind,
    /// The line (1-based), or 0 when the problem is the whole file.
    pub line: usize,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            f.write_str(self.kind.hint())
        } else {
            write!(f, "line {}: {}", self.line, self.kind.hint())
        }
    }
}

impl std::error::Error for ParseError {}

fn err(kind: ParseErrorKind, line: usize) -> ParseError {
    ParseError { kind, line }
}

fn has_control(bytes: &[u8]) -> bool {
    bytes.iter().any(|&b| b < 0x20 || b == 0x7f)
}

/// Parses a whole dot-qmail file. Comments and blank lines are dropped;
/// an empty result means the file has no instructions.
///
/// # Errors
/// The first problem found, in file order (the size check comes first).
pub fn parse(text: &[u8]) -> Result<Vec<Line>, ParseError> {
    if text.len() > MAX_FILE {
        return Err(err(ParseErrorKind::TooLarge, 0));
    }
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    let mut out = Vec::new();
    if text.is_empty() {
        return Ok(out);
    }
    for (i, raw) in body.split(|&b| b == b'\n').enumerate() {
        let number = i + 1;
        if number > MAX_LINES {
            return Err(err(ParseErrorKind::TooManyLines, 0));
        }
        if raw.len() > MAX_LINE {
            return Err(err(ParseErrorKind::LineTooLong, number));
        }
        if memchr::memchr(0, raw).is_some() {
            return Err(err(ParseErrorKind::Nul, number));
        }
        let end = raw
            .iter()
            .rposition(|&b| !matches!(b, b' ' | b'\t' | b'\r'))
            .map_or(0, |p| p + 1);
        let line = &raw[..end];
        if line.is_empty() {
            if number == 1 {
                return Err(err(ParseErrorKind::FirstLineBlank, number));
            }
            continue;
        }
        let instruction = match line[0] {
            b'#' => continue,
            b'+' if line == b"+list" => Instruction::ListFlag,
            b'+' => continue,
            b'|' => {
                let cmd = &line[1..];
                if cmd.iter().all(|&b| b == b' ' || b == b'\t') {
                    return Err(err(ParseErrorKind::EmptyProgram, number));
                }
                Instruction::Program(cmd.to_vec())
            }
            b'/' | b'.' => {
                if has_control(line) {
                    return Err(err(ParseErrorKind::ControlInPath, number));
                }
                if line.ends_with(b"/") {
                    Instruction::Maildir(line.to_vec())
                } else {
                    Instruction::Mbox(line.to_vec())
                }
            }
            first => {
                let addr = if first == b'&' { &line[1..] } else { line };
                if addr.is_empty() {
                    return Err(err(ParseErrorKind::EmptyForward, number));
                }
                if has_control(addr) {
                    return Err(err(ParseErrorKind::ControlInAddress, number));
                }
                if addr[0] == b' ' {
                    return Err(err(ParseErrorKind::SpaceInAddress, number));
                }
                Instruction::Forward(addr.to_vec())
            }
        };
        out.push(Line {
            number,
            instruction,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Instruction::*;
    use ParseErrorKind::*;

    #[test]
    fn bad_inputs() {
        let long_line = vec![b'a'; MAX_LINE + 1];
        let many_lines = b"#\n".repeat(MAX_LINES + 1);
        let huge = vec![b'#'; MAX_FILE + 1];
        let cases: &[(&[u8], ParseErrorKind, usize)] = &[
            (&huge, TooLarge, 0),
            (&many_lines, TooManyLines, 0),
            (&long_line, LineTooLong, 1),
            (b"\n./Maildir/\n", FirstLineBlank, 1),
            (b" \t\r\n./Maildir/\n", FirstLineBlank, 1),
            (b"./Maildir/\n./m\0box\n", Nul, 2),
            (b"joe@x\0\n", Nul, 1),
            (b"|\n", EmptyProgram, 1),
            (b"#c\n|  \t\n", EmptyProgram, 2),
            (b"&\n", EmptyForward, 1),
            (b"&   \n", EmptyForward, 1),
            (b"&joe\x01@example.org\n", ControlInAddress, 1),
            (b"joe\x7f@example.org\n", ControlInAddress, 1),
            (b"& joe@example.org\n", SpaceInAddress, 1),
            (b"&\tjoe@example.org\n", ControlInAddress, 1),
            (b"./Mail\x1bdir/\n", ControlInPath, 1),
            (b"/var/mail/\x08joe\n", ControlInPath, 1),
        ];
        for (input, kind, line) in cases {
            let got = parse(input);
            assert_eq!(
                got,
                Err(ParseError {
                    kind: *kind,
                    line: *line
                }),
                "input {:?}",
                input.escape_ascii().to_string()
            );
            assert!(!got.unwrap_err().to_string().is_empty());
        }
    }

    #[test]
    fn limits_are_inclusive() {
        let line = vec![b'a'; MAX_LINE];
        assert_eq!(parse(&line).unwrap().len(), 1);
        let lines = b"#\n".repeat(MAX_LINES);
        assert_eq!(parse(&lines).unwrap(), vec![]);
        let mut big = b"./Maildir/\n".to_vec();
        while big.len() < MAX_FILE {
            big.extend_from_slice(b"#\n");
        }
        big.truncate(MAX_FILE);
        if big.ends_with(b"#") {
            big.pop();
            big.push(b'\n');
        }
        // The size limit alone is not hit at exactly MAX_FILE bytes
        // (the line count is, which proves the size check passed).
        assert_eq!(big.len(), MAX_FILE);
        assert_eq!(parse(&big), Err(err(TooManyLines, 0)));
    }

    #[test]
    fn good_inputs() {
        type Case<'a> = (&'a [u8], &'a [(usize, Instruction)]);
        let cases: &[Case] = &[
            (b"", &[]),
            (b"# just a comment\n", &[]),
            (b"./Maildir/\n", &[(1, Maildir(b"./Maildir/".to_vec()))]),
            (b"./Maildir/", &[(1, Maildir(b"./Maildir/".to_vec()))]),
            (
                b"./Maildir/  \t\r\n",
                &[(1, Maildir(b"./Maildir/".to_vec()))],
            ),
            (
                b"/abs/Maildir/\n",
                &[(1, Maildir(b"/abs/Maildir/".to_vec()))],
            ),
            (b"./mbox\n", &[(1, Mbox(b"./mbox".to_vec()))]),
            (b"/var/mail/joe\n", &[(1, Mbox(b"/var/mail/joe".to_vec()))]),
            (
                b"|exec /usr/bin/true 'a b'\n",
                &[(1, Program(b"exec /usr/bin/true 'a b'".to_vec()))],
            ),
            (b"| x\n", &[(1, Program(b" x".to_vec()))]),
            (
                b"&joe@example.org\n",
                &[(1, Forward(b"joe@example.org".to_vec()))],
            ),
            (
                b"joe@example.org\n",
                &[(1, Forward(b"joe@example.org".to_vec()))],
            ),
            (b"&&x\n", &[(1, Forward(b"&x".to_vec()))]),
            (
                b"# list\n\n./Maildir/\n\n|prog\n&a@b\nc@d\n#end",
                &[
                    (3, Maildir(b"./Maildir/".to_vec())),
                    (5, Program(b"prog".to_vec())),
                    (6, Forward(b"a@b".to_vec())),
                    (7, Forward(b"c@d".to_vec())),
                ],
            ),
            (
                "&j\u{fc}rgen@example.org\n".as_bytes(),
                &[(1, Forward("j\u{fc}rgen@example.org".as_bytes().to_vec()))],
            ),
        ];
        for (input, want) in cases {
            let got = parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            let want: Vec<Line> = want
                .iter()
                .map(|(n, i)| Line {
                    number: *n,
                    instruction: i.clone(),
                })
                .collect();
            assert_eq!(got, want, "input {:?}", input.escape_ascii().to_string());
        }
    }

    #[test]
    fn local_instructions() {
        assert!(Program(b"x".to_vec()).is_local());
        assert!(Maildir(b"./M/".to_vec()).is_local());
        assert!(Mbox(b"./m".to_vec()).is_local());
        assert!(!Forward(b"a@b".to_vec()).is_local());
    }
}
