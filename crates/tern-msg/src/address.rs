//! RFC 5322 address lists, parsed the way qmail-inject parses them.
//!
//! This is the only place in Tern that parses RFC 5322 addresses (header
//! fields and injection arguments). The grammar accepted is RFC 5322
//! `address-list` with its obsolete forms:
//!
//! * display names (atoms, quoted strings, dots), angle addresses,
//!   comments (nested, with quoted pairs) anywhere between tokens,
//!   folding white space (LF or CRLF plus a blank);
//! * groups (`undisclosed-recipients: ;`, `team: a@x, b@y;`), not nested;
//! * obsolete source routes (`<@relay1,@relay2:user@host>`), stripped;
//! * empty list elements (`a@x,,b@y`).
//!
//! and it completes addresses as qmail-inject does ([`Completion`]):
//!
//! * a bare local part gets `@defaulthost`;
//! * a host name ending in `+` loses the `+` and gets `.plusdomain`;
//! * any other host name without a dot gets `.defaultdomain`, except
//!   `localhost` and a name equal to `defaultdomain` itself;
//! * domain literals (`[192.0.2.1]`) are left alone.
//!
//! The result is the envelope form of each mailbox (`local@domain`, the
//! local part unquoted, as qmail-queue expects). Bytes of 128 and above are
//! accepted as atom text, so UTF-8 addresses (RFC 6532) pass.
//!
//! Errors are typed ([`AddressErrorKind`]) with a static hint and the byte
//! offset where parsing stopped; the rejected bytes are never echoed.

use thiserror::Error;

/// Longest envelope address produced, in bytes (the queue's limit, the same
/// as `tern_spool::MAX_ADDRESS`).
pub const MAX_ADDRESS: usize = 1000;

/// Longest address-list text accepted, in bytes (one header field's value).
pub const MAX_LIST: usize = 64 * 1024;

/// Most mailboxes accepted in one address list.
pub const MAX_MAILBOXES: usize = 10_000;

/// What went wrong in an address list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AddressErrorKind {
    /// The text is longer than [`MAX_LIST`].
    ListTooLong,
    /// More than [`MAX_MAILBOXES`] mailboxes.
    TooManyMailboxes,
    /// A completed address is longer than [`MAX_ADDRESS`].
    AddressTooLong,
    /// A control character (NUL, bare CR, ESC, DEL, ...) outside a quoted
    /// string or comment.
    ControlCharacter,
    /// `(` without its `)`.
    UnterminatedComment,
    /// `)` without a `(`.
    UnbalancedParenthesis,
    /// `"` without its closing `"`.
    UnterminatedQuotedString,
    /// `[` without its `]`.
    UnterminatedDomainLiteral,
    /// `<` without its `>`.
    UnterminatedAngleAddress,
    /// `<>` where a mailbox is required.
    EmptyAngleAddress,
    /// A mailbox with nothing before the `@`.
    EmptyLocalPart,
    /// `@` with no domain after it.
    MissingDomain,
    /// A domain with an empty label (`a@.x`, `a@x..y`, `a@x.`).
    BadDomain,
    /// A source route that is not `@host,@host:`.
    BadRoute,
    /// A group inside a group.
    NestedGroup,
    /// A group (`name:`) without its closing `;`.
    UnterminatedGroup,
    /// Two addresses not separated by a comma (`a@x b@y`, `Joe Smith`).
    MissingComma,
    /// A character that cannot appear where it was found (`>`, `;`, `:`, ...).
    UnexpectedCharacter,
    /// Exactly one mailbox was required.
    NotOneMailbox,
}

impl AddressErrorKind {
    /// A short static explanation, fit for an error message.
    pub fn hint(self) -> &'static str {
        use AddressErrorKind::*;
        match self {
            ListTooLong => "address list too long",
            TooManyMailboxes => "too many addresses in one list",
            AddressTooLong => "address too long",
            ControlCharacter => "control character in address",
            UnterminatedComment => "unterminated comment: ( without )",
            UnbalancedParenthesis => ") without (",
            UnterminatedQuotedString => "unterminated quoted string",
            UnterminatedDomainLiteral => "unterminated domain literal: [ without ]",
            UnterminatedAngleAddress => "unterminated angle address: < without >",
            EmptyAngleAddress => "empty address <>",
            EmptyLocalPart => "address with an empty local part",
            MissingDomain => "@ without a domain",
            BadDomain => "domain with an empty label",
            BadRoute => "malformed source route",
            NestedGroup => "group inside a group",
            UnterminatedGroup => "group without its closing ;",
            MissingComma => "addresses not separated by a comma",
            UnexpectedCharacter => "unexpected character in address",
            NotOneMailbox => "exactly one address expected",
        }
    }
}

/// An address-list syntax error: what and where (byte offset in the input).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("{} (at byte {offset})", kind.hint())]
pub struct AddressError {
    /// What went wrong.
    pub kind: AddressErrorKind,
    /// Byte offset in the parsed text where the problem was seen.
    pub offset: usize,
}

impl AddressError {
    fn new(kind: AddressErrorKind, offset: usize) -> Self {
        AddressError { kind, offset }
    }
}

/// How incomplete addresses are completed (qmail-inject's `defaulthost`,
/// `defaultdomain` and `plusdomain` controls).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// Host for addresses without `@`.
    pub defaulthost: Vec<u8>,
    /// Appended (after a dot) to host names without a dot.
    pub defaultdomain: Vec<u8>,
    /// Replaces a trailing `+` of a host name (after a dot).
    pub plusdomain: Vec<u8>,
}

impl Completion {
    /// Completes a host name: `host+` → `host.plusdomain`, `host` (no dot) →
    /// `host.defaultdomain`; domain literals and dotted names unchanged.
    pub fn complete_host(&self, host: &[u8]) -> Vec<u8> {
        if host.starts_with(b"[") {
            return host.to_vec();
        }
        if let Some(stem) = host.strip_suffix(b"+") {
            let mut out = stem.to_vec();
            if !out.is_empty() {
                out.push(b'.');
            }
            out.extend_from_slice(&self.plusdomain);
            return out;
        }
        // Two departures from qmail-inject, both for dotless names that
        // completion could only spoil: `localhost`, and a host equal to
        // defaultdomain itself (a dotless `me`, as on a host whose name has
        // no domain: qmail would make `vm` into `vm.vm`).
        if host.contains(&b'.')
            || self.defaultdomain.is_empty()
            || host.eq_ignore_ascii_case(b"localhost")
            || host.eq_ignore_ascii_case(&self.defaultdomain)
        {
            return host.to_vec();
        }
        let mut out = host.to_vec();
        out.push(b'.');
        out.extend_from_slice(&self.defaultdomain);
        out
    }

    /// The completed default host (`defaulthost` itself goes through
    /// [`Completion::complete_host`], as in qmail-inject).
    pub fn default_host(&self) -> Vec<u8> {
        self.complete_host(&self.defaulthost)
    }
}

/// One mailbox in envelope form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    /// The local part, unquoted (quoted pairs resolved).
    pub local: Vec<u8>,
    /// The completed domain (a domain literal keeps its brackets).
    pub domain: Vec<u8>,
}

impl Mailbox {
    /// `local@domain`, as written into the envelope.
    pub fn envelope(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.local.len() + 1 + self.domain.len());
        v.extend_from_slice(&self.local);
        v.push(b'@');
        v.extend_from_slice(&self.domain);
        v
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    /// Atom text (8-bit allowed).
    Atom(Vec<u8>),
    /// Quoted string, content unquoted.
    Quoted(Vec<u8>),
    /// Domain literal including the brackets.
    Literal(Vec<u8>),
    /// One of `< > : ; @ , .`
    Special(u8),
}

fn is_atext(b: u8) -> bool {
    b >= 0x80
        || (b.is_ascii_graphic()
            && !matches!(
                b,
                b'(' | b')'
                    | b'<'
                    | b'>'
                    | b'['
                    | b']'
                    | b':'
                    | b';'
                    | b'@'
                    | b'\\'
                    | b','
                    | b'.'
                    | b'"'
            ))
}

fn is_wsp(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Characters allowed inside quoted strings, comments and literals besides
/// the visible ones: blanks and folding.
fn is_quotable(b: u8) -> bool {
    b >= 0x80 || b.is_ascii_graphic() || is_wsp(b)
}

/// The tokens of `text` with their start offsets, and (second vector) the
/// offset just past each token.
type Tokens = (Vec<(Tok, usize)>, Vec<usize>);

fn tokenize(text: &[u8]) -> Result<Tokens, AddressError> {
    use AddressErrorKind::*;
    let mut toks = Vec::new();
    let mut ends = Vec::new();
    let mut i = 0;
    while i < text.len() {
        if ends.len() < toks.len() {
            ends.push(i);
        }
        let b = text[i];
        let start = i;
        if is_wsp(b) {
            // A CR is only white space as part of CRLF.
            if b == b'\r' && text.get(i + 1) != Some(&b'\n') {
                return Err(AddressError::new(ControlCharacter, i));
            }
            i += 1;
        } else if b == b'(' {
            let mut depth = 0usize;
            loop {
                match text.get(i) {
                    None => return Err(AddressError::new(UnterminatedComment, start)),
                    Some(b'(') => depth += 1,
                    Some(b')') => {
                        depth -= 1;
                        if depth == 0 {
                            i += 1;
                            break;
                        }
                    }
                    Some(b'\\') => {
                        i += 1;
                        if i >= text.len() {
                            return Err(AddressError::new(UnterminatedComment, start));
                        }
                    }
                    Some(&c) if !is_quotable(c) => {
                        return Err(AddressError::new(ControlCharacter, i));
                    }
                    Some(_) => {}
                }
                i += 1;
            }
        } else if b == b')' {
            return Err(AddressError::new(UnbalancedParenthesis, i));
        } else if b == b'"' {
            let mut content = Vec::new();
            i += 1;
            loop {
                match text.get(i) {
                    None => return Err(AddressError::new(UnterminatedQuotedString, start)),
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') => {
                        i += 1;
                        match text.get(i) {
                            None => return Err(AddressError::new(UnterminatedQuotedString, start)),
                            Some(&c) if c == 0 || c == b'\r' || c == b'\n' => {
                                return Err(AddressError::new(ControlCharacter, i));
                            }
                            Some(&c) => content.push(c),
                        }
                    }
                    // Folding inside a quoted string: the line end is removed.
                    Some(b'\r') if text.get(i + 1) == Some(&b'\n') => i += 1,
                    Some(b'\n') => {}
                    Some(&c) if !is_quotable(c) || c == b'\r' => {
                        return Err(AddressError::new(ControlCharacter, i));
                    }
                    Some(&c) => content.push(c),
                }
                i += 1;
            }
            toks.push((Tok::Quoted(content), start));
        } else if b == b'[' {
            loop {
                match text.get(i) {
                    None => return Err(AddressError::new(UnterminatedDomainLiteral, start)),
                    Some(b']') => {
                        i += 1;
                        break;
                    }
                    Some(b'[') if i != start => {
                        return Err(AddressError::new(UnexpectedCharacter, i));
                    }
                    Some(b'\\') => return Err(AddressError::new(UnexpectedCharacter, i)),
                    Some(&c) if !c.is_ascii_graphic() && c < 0x80 => {
                        return Err(AddressError::new(ControlCharacter, i));
                    }
                    Some(_) => {}
                }
                i += 1;
            }
            toks.push((Tok::Literal(text[start..i].to_vec()), start));
        } else if matches!(b, b'<' | b'>' | b':' | b';' | b'@' | b',' | b'.') {
            toks.push((Tok::Special(b), start));
            i += 1;
        } else if is_atext(b) {
            while i < text.len() && is_atext(text[i]) {
                i += 1;
            }
            toks.push((Tok::Atom(text[start..i].to_vec()), start));
        } else if b == b']' || b == b'\\' {
            return Err(AddressError::new(UnexpectedCharacter, i));
        } else {
            return Err(AddressError::new(ControlCharacter, i));
        }
    }
    if ends.len() < toks.len() {
        ends.push(i);
    }
    Ok((toks, ends))
}

struct Parser<'a> {
    toks: &'a [(Tok, usize)],
    /// The offset just past each token.
    ends: &'a [usize],
    pos: usize,
    end_offset: usize,
    completion: &'a Completion,
    out: Vec<Mailbox>,
    /// Where each mailbox without `@` ends in the text, in order.
    bare: Vec<usize>,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(t, _)| t)
    }

    fn offset(&self) -> usize {
        self.toks.get(self.pos).map_or(self.end_offset, |(_, o)| *o)
    }

    fn err(&self, kind: AddressErrorKind) -> AddressError {
        AddressError::new(kind, self.offset())
    }

    fn is_special(&self, c: u8) -> bool {
        self.peek() == Some(&Tok::Special(c))
    }

    fn list(&mut self) -> Result<(), AddressError> {
        loop {
            while self.is_special(b',') {
                self.pos += 1;
            }
            if self.peek().is_none() {
                return Ok(());
            }
            self.address(false)?;
            self.separator(false)?;
        }
    }

    /// After an address: a comma, the end, or (in a group) the `;`.
    fn separator(&mut self, in_group: bool) -> Result<(), AddressError> {
        match self.peek() {
            None => Ok(()),
            Some(Tok::Special(b',')) => Ok(()),
            Some(Tok::Special(b';')) if in_group => Ok(()),
            Some(Tok::Atom(_) | Tok::Quoted(_) | Tok::Literal(_) | Tok::Special(b'<')) => {
                Err(self.err(AddressErrorKind::MissingComma))
            }
            Some(_) => Err(self.err(AddressErrorKind::UnexpectedCharacter)),
        }
    }

    /// One address: a mailbox, or (outside groups) a group.
    fn address(&mut self, in_group: bool) -> Result<(), AddressError> {
        // Look ahead over words, dots, `@` and literals to what stops them.
        let start = self.pos;
        let mut end = start;
        while let Some((t, _)) = self.toks.get(end) {
            match t {
                Tok::Atom(_) | Tok::Quoted(_) | Tok::Literal(_) => end += 1,
                Tok::Special(b'.' | b'@') => end += 1,
                _ => break,
            }
        }
        match self.toks.get(end).map(|(t, _)| t) {
            Some(Tok::Special(b'<')) => {
                // Display name (ignored), then the angle address.
                self.pos = end + 1;
                self.angle()
            }
            Some(Tok::Special(b':')) => {
                let phrase_only = self.toks[start..end]
                    .iter()
                    .all(|(t, _)| matches!(t, Tok::Atom(_) | Tok::Quoted(_) | Tok::Special(b'.')));
                if !phrase_only || start == end {
                    self.pos = end;
                    return Err(self.err(AddressErrorKind::UnexpectedCharacter));
                }
                if in_group {
                    self.pos = end;
                    return Err(self.err(AddressErrorKind::NestedGroup));
                }
                let group_at = self.toks[end].1;
                self.pos = end + 1;
                loop {
                    while self.is_special(b',') {
                        self.pos += 1;
                    }
                    match self.peek() {
                        None => {
                            return Err(AddressError::new(
                                AddressErrorKind::UnterminatedGroup,
                                group_at,
                            ));
                        }
                        Some(Tok::Special(b';')) => {
                            self.pos += 1;
                            return Ok(());
                        }
                        Some(_) => {
                            self.address(true)?;
                            self.separator(true)?;
                        }
                    }
                }
            }
            _ => {
                if start == end {
                    return Err(self.err(AddressErrorKind::UnexpectedCharacter));
                }
                let mailbox = self.addr_spec(start, end)?;
                self.note_bare(start, end);
                self.pos = end;
                self.push(mailbox)
            }
        }
    }

    /// After `<`: optional route, addr-spec, `>`.
    fn angle(&mut self) -> Result<(), AddressError> {
        let open = self.toks[self.pos - 1].1;
        if self.is_special(b'>') {
            return Err(AddressError::new(AddressErrorKind::EmptyAngleAddress, open));
        }
        if self.is_special(b'@') {
            // obs-route: 1*("," / "@" domain) ":"
            loop {
                match self.peek() {
                    Some(Tok::Special(b'@')) => {
                        self.pos += 1;
                        let s = self.pos;
                        while matches!(
                            self.peek(),
                            Some(Tok::Atom(_) | Tok::Literal(_) | Tok::Special(b'.'))
                        ) {
                            self.pos += 1;
                        }
                        if s == self.pos {
                            return Err(self.err(AddressErrorKind::BadRoute));
                        }
                    }
                    Some(Tok::Special(b',')) => self.pos += 1,
                    Some(Tok::Special(b':')) => {
                        self.pos += 1;
                        break;
                    }
                    None => {
                        return Err(AddressError::new(
                            AddressErrorKind::UnterminatedAngleAddress,
                            open,
                        ));
                    }
                    Some(_) => return Err(self.err(AddressErrorKind::BadRoute)),
                }
            }
        }
        let start = self.pos;
        let mut end = start;
        while let Some((t, _)) = self.toks.get(end) {
            match t {
                Tok::Atom(_) | Tok::Quoted(_) | Tok::Literal(_) => end += 1,
                Tok::Special(b'.' | b'@') => end += 1,
                _ => break,
            }
        }
        match self.toks.get(end).map(|(t, _)| t) {
            Some(Tok::Special(b'>')) => {}
            None => {
                return Err(AddressError::new(
                    AddressErrorKind::UnterminatedAngleAddress,
                    open,
                ));
            }
            Some(_) => {
                self.pos = end;
                return Err(self.err(AddressErrorKind::UnexpectedCharacter));
            }
        }
        if start == end {
            return Err(AddressError::new(AddressErrorKind::EmptyAngleAddress, open));
        }
        let mailbox = self.addr_spec(start, end)?;
        self.note_bare(start, end);
        self.pos = end + 1;
        self.push(mailbox)
    }

    /// `local-part ["@" domain]` from tokens `start..end` (words, dots, `@`,
    /// literals only).
    fn addr_spec(&self, start: usize, end: usize) -> Result<Mailbox, AddressError> {
        use AddressErrorKind::*;
        let toks = &self.toks[start..end];
        // The first `@` separates local part and domain (a quoted `@` is
        // inside a Quoted token and does not count; a second `@` is an error
        // in the domain).
        let at = toks.iter().position(|(t, _)| *t == Tok::Special(b'@'));
        let (local_toks, domain_toks) = match at {
            Some(a) => (&toks[..a], Some((&toks[a + 1..], toks[a].1))),
            None => (toks, None),
        };
        let mut local = Vec::new();
        let mut prev_word = false;
        for (t, off) in local_toks {
            match t {
                Tok::Atom(w) | Tok::Quoted(w) => {
                    if prev_word {
                        return Err(AddressError::new(MissingComma, *off));
                    }
                    local.extend_from_slice(w);
                    prev_word = true;
                }
                Tok::Special(b'.') => {
                    local.push(b'.');
                    prev_word = false;
                }
                _ => return Err(AddressError::new(UnexpectedCharacter, *off)),
            }
        }
        if local.is_empty() {
            return Err(AddressError::new(
                EmptyLocalPart,
                toks.first().map_or(self.end_offset, |(_, o)| *o),
            ));
        }
        let domain = match domain_toks {
            None => self.completion.default_host(),
            Some((d, at_off)) => {
                if d.is_empty() {
                    return Err(AddressError::new(MissingDomain, at_off));
                }
                let mut host = Vec::new();
                if let [(Tok::Literal(l), _)] = d {
                    host.extend_from_slice(l);
                } else {
                    let mut expect_label = true;
                    for (t, off) in d {
                        match t {
                            Tok::Atom(w) if expect_label => {
                                host.extend_from_slice(w);
                                expect_label = false;
                            }
                            Tok::Special(b'.') if !expect_label => {
                                host.push(b'.');
                                expect_label = true;
                            }
                            Tok::Special(b'.') => return Err(AddressError::new(BadDomain, *off)),
                            Tok::Atom(_) | Tok::Quoted(_) | Tok::Literal(_) => {
                                return Err(AddressError::new(MissingComma, *off));
                            }
                            _ => return Err(AddressError::new(UnexpectedCharacter, *off)),
                        }
                    }
                    if expect_label {
                        return Err(AddressError::new(BadDomain, d[d.len() - 1].1));
                    }
                }
                self.completion.complete_host(&host)
            }
        };
        let mailbox = Mailbox { local, domain };
        if mailbox.local.len() + 1 + mailbox.domain.len() > MAX_ADDRESS {
            return Err(AddressError::new(AddressTooLong, toks[0].1));
        }
        Ok(mailbox)
    }

    /// Records where the addr-spec of tokens `start..end` ends when it has
    /// no `@` (a bare local part, completed with `defaulthost`).
    fn note_bare(&mut self, start: usize, end: usize) {
        let has_at = self.toks[start..end]
            .iter()
            .any(|(t, _)| *t == Tok::Special(b'@'));
        if !has_at && end > start {
            self.bare.push(self.ends[end - 1]);
        }
    }

    fn push(&mut self, mailbox: Mailbox) -> Result<(), AddressError> {
        if self.out.len() >= MAX_MAILBOXES {
            return Err(self.err(AddressErrorKind::TooManyMailboxes));
        }
        self.out.push(mailbox);
        Ok(())
    }
}

/// Parses an RFC 5322 address list (a header field's value, or a command
/// line argument) into completed mailboxes, in order. An empty list (or one
/// with only empty groups) gives an empty vector.
pub fn parse_list(text: &[u8], completion: &Completion) -> Result<Vec<Mailbox>, AddressError> {
    Ok(parse_shape(text, completion)?.0)
}

/// Where an address list can be qualified and folded (see
/// [`list_shape`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListShape {
    /// For each mailbox without `@` (a bare local part), the offset in the
    /// text just past its local part: where `@host` goes.
    pub bare_ends: Vec<usize>,
    /// The offset of every `,` between tokens (not inside quoted strings,
    /// comments or literals): places where the text may be folded after.
    pub commas: Vec<usize>,
}

/// Parses an address list like [`parse_list`] and tells where its bare
/// local parts end and where its commas are, so that a caller can insert
/// `@host` after each bare local part without touching any other byte.
pub fn list_shape(text: &[u8], completion: &Completion) -> Result<ListShape, AddressError> {
    Ok(parse_shape(text, completion)?.1)
}

fn parse_shape(
    text: &[u8],
    completion: &Completion,
) -> Result<(Vec<Mailbox>, ListShape), AddressError> {
    if text.len() > MAX_LIST {
        return Err(AddressError::new(AddressErrorKind::ListTooLong, MAX_LIST));
    }
    let (toks, ends) = tokenize(text)?;
    let mut p = Parser {
        toks: &toks,
        ends: &ends,
        pos: 0,
        end_offset: text.len(),
        completion,
        out: Vec::new(),
        bare: Vec::new(),
    };
    p.list()?;
    let commas = toks
        .iter()
        .filter(|(t, _)| *t == Tok::Special(b','))
        .map(|(_, at)| *at)
        .collect();
    Ok((
        p.out,
        ListShape {
            bare_ends: p.bare,
            commas,
        },
    ))
}

/// Parses an envelope sender given by a user (`-f`): empty text or `<>`
/// (white space allowed around it) is the null sender (an empty vector);
/// anything else must be exactly one mailbox, completed.
pub fn parse_sender(text: &[u8], completion: &Completion) -> Result<Vec<u8>, AddressError> {
    let trimmed = text.trim_ascii();
    if trimmed.is_empty() || trimmed == b"<>" {
        return Ok(Vec::new());
    }
    let mut list = parse_list(text, completion)?;
    if list.len() != 1 {
        return Err(AddressError::new(AddressErrorKind::NotOneMailbox, 0));
    }
    Ok(list.remove(0).envelope())
}

/// Writes a mailbox for a header field: the local part quoted when it is not
/// a dot-atom, then `@domain`. Control characters are dropped.
pub fn format_mailbox(local: &[u8], domain: &[u8]) -> Vec<u8> {
    let dot_atom = !local.is_empty()
        && local
            .split(|&b| b == b'.')
            .all(|w| !w.is_empty() && w.iter().all(|&b| is_atext(b)));
    let mut out = Vec::with_capacity(local.len() + domain.len() + 3);
    if dot_atom {
        out.extend_from_slice(local);
    } else {
        quote_into(&mut out, local);
    }
    out.push(b'@');
    out.extend(
        domain
            .iter()
            .copied()
            .filter(|&b| b >= 0x80 || b.is_ascii_graphic()),
    );
    out
}

/// Writes a display name: as is when it is a sequence of atoms separated
/// by single spaces, otherwise as a quoted string. Control characters
/// (including CR and LF, so no header line can be forged) become spaces.
pub fn format_phrase(name: &[u8]) -> Vec<u8> {
    let clean: Vec<u8> = name
        .iter()
        .map(|&b| if b < 0x20 || b == 0x7f { b' ' } else { b })
        .collect();
    let clean = clean.trim_ascii();
    let plain = !clean.is_empty()
        && clean
            .split(|&b| b == b' ')
            .all(|w| !w.is_empty() && w.iter().all(|&b| is_atext(b)));
    if plain {
        clean.to_vec()
    } else {
        let mut out = Vec::with_capacity(clean.len() + 2);
        quote_into(&mut out, clean);
        out
    }
}

fn quote_into(out: &mut Vec<u8>, text: &[u8]) {
    out.push(b'"');
    for &b in text {
        if b < 0x20 && b != b'\t' || b == 0x7f {
            continue;
        }
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::AddressErrorKind::*;
    use super::*;

    fn completion() -> Completion {
        Completion {
            defaulthost: b"host.example".to_vec(),
            defaultdomain: b"example.org".to_vec(),
            plusdomain: b"plus.example".to_vec(),
        }
    }

    fn envs(text: &[u8]) -> Result<Vec<String>, AddressErrorKind> {
        parse_list(text, &completion())
            .map(|v| {
                v.iter()
                    .map(|m| String::from_utf8_lossy(&m.envelope()).into_owned())
                    .collect()
            })
            .map_err(|e| e.kind)
    }

    #[test]
    fn bad_inputs() {
        let long_list = vec![b'a'; MAX_LIST + 1];
        let long_addr = [vec![b'a'; MAX_ADDRESS], b"@x.y".to_vec()].concat();
        let many = b"a,".repeat(MAX_MAILBOXES + 1);
        let table: &[(&[u8], AddressErrorKind)] = &[
            (&long_list, ListTooLong),
            (&long_addr, AddressTooLong),
            (&many, TooManyMailboxes),
            (b"a\0b@x.y", ControlCharacter),
            (b"a@x.y\rb@x.y", ControlCharacter),
            (b"a@x.y\x1b[31m", ControlCharacter),
            (b"\"a\0\"@x.y", ControlCharacter),
            (b"a@x.y (comment", UnterminatedComment),
            (b"a@x.y (a (nested) comment", UnterminatedComment),
            (b"a@x.y (esc\\", UnterminatedComment),
            (b"a@x.y)", UnbalancedParenthesis),
            (b"\"joe@x.y", UnterminatedQuotedString),
            (b"\"joe\\", UnterminatedQuotedString),
            (b"joe@[1.2.3.4", UnterminatedDomainLiteral),
            (b"joe@[1.2[3]", UnexpectedCharacter),
            (b"Joe <joe@x.y", UnterminatedAngleAddress),
            (b"Joe <joe@x.y, b@c.d", UnexpectedCharacter),
            (b"Joe <>", EmptyAngleAddress),
            (b"<>", EmptyAngleAddress),
            (b"@x.y", EmptyLocalPart),
            (b"Joe <@x.y>", BadRoute),
            (b"joe@", MissingDomain),
            (b"Joe <joe@>", MissingDomain),
            (b"joe@.x.y", BadDomain),
            (b"joe@x..y", BadDomain),
            (b"joe@x.y.", BadDomain),
            (b"<@a,@:joe@x.y>", BadRoute),
            (b"<@a;joe@x.y>", BadRoute),
            (b"<@a,@b", UnterminatedAngleAddress),
            (b"a: b: c@d.e;;", NestedGroup),
            (b"team: a@b.c, d@e.f", UnterminatedGroup),
            (b"undisclosed-recipients:", UnterminatedGroup),
            (b"a@x.y b@x.y", MissingComma),
            (b"a@b@c.d", UnexpectedCharacter),
            (b"Joe Smith", MissingComma),
            (b"<a@x.y> b@x.y", MissingComma),
            (b"<a@x.y> <b@x.y>", MissingComma),
            (b"a@x y", MissingComma),
            (b"a@x [1.2.3.4]", MissingComma),
            (b"a@x.y>", UnexpectedCharacter),
            (b"a@x.y;", UnexpectedCharacter),
            (b": a@b.c;", UnexpectedCharacter),
            (b"a@b: c@d.e;", UnexpectedCharacter),
            (b"a]@x.y", UnexpectedCharacter),
            (b"a\\b@x.y", UnexpectedCharacter),
            (b"Joe <a b@x.y>", MissingComma),
        ];
        for (input, want) in table {
            assert_eq!(
                envs(input),
                Err(*want),
                "input {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn good_inputs() {
        let table: &[(&[u8], &[&str])] = &[
            (b"", &[]),
            (b"   ", &[]),
            (b",,", &[]),
            (b"joe@x.example", &["joe@x.example"]),
            (b"joe", &["joe@host.example"]),
            (b"joe@mail", &["joe@mail.example.org"]),
            (b"joe@mail+", &["joe@mail.plus.example"]),
            (b"joe@+", &["joe@plus.example"]),
            (b"joe@[192.0.2.1]", &["joe@[192.0.2.1]"]),
            (b"Joe Smith <joe@x.example>", &["joe@x.example"]),
            (b"\"Smith, Joe\" <joe@x.example>", &["joe@x.example"]),
            (b"Joe Q. Public <jqp@x.example>", &["jqp@x.example"]),
            (b"<joe@x.example>", &["joe@x.example"]),
            // A display name with an unquoted @ (seen in the wild) is accepted
            // and ignored like any display name.
            (b"joe@x.example <joe@x.example>", &["joe@x.example"]),
            (b"<joe>", &["joe@host.example"]),
            (
                b"joe@x.example (Joe (the (real) one) Smith)",
                &["joe@x.example"],
            ),
            (b"(c)joe(c)@(c)x(c).(c)example(c)", &["joe@x.example"]),
            (b"\"joe smith\"@x.example", &["joe smith@x.example"]),
            (b"\"a\\\"b\"@x.example", &["a\"b@x.example"]),
            (b"\"a@b\"@x.example", &["a@b@x.example"]),
            (b"first.last@x.example", &["first.last@x.example"]),
            (b"first . last @ x . example", &["first.last@x.example"]),
            (b"john..doe@x.example", &["john..doe@x.example"]),
            (b"a@x.example, b@y.example", &["a@x.example", "b@y.example"]),
            (b"a@x.example,,b", &["a@x.example", "b@host.example"]),
            (b"undisclosed-recipients: ;", &[]),
            (b"undisclosed-recipients:;", &[]),
            (
                b"team: a@x.example, Bob <b@y.example>; , c@z.example",
                &["a@x.example", "b@y.example", "c@z.example"],
            ),
            (
                b"<@relay1.example,@relay2.example:joe@x.example>",
                &["joe@x.example"],
            ),
            (b"Joe <@relay:joe@x.example>", &["joe@x.example"]),
            (
                b"a@x.example,\n b@y.example",
                &["a@x.example", "b@y.example"],
            ),
            (
                b"a@x.example,\r\n\tb@y.example",
                &["a@x.example", "b@y.example"],
            ),
            (
                "Jörg <jörg@bücher.example>".as_bytes(),
                &["jörg@bücher.example"],
            ),
            (b"\"folded\r\n name\" <a@x.example>", &["a@x.example"]),
        ];
        for (input, want) in table {
            let got = envs(input)
                .unwrap_or_else(|e| panic!("input {:?}: {e:?}", String::from_utf8_lossy(input)));
            assert_eq!(got, *want, "input {:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn error_offsets_point_at_the_problem() {
        let e = parse_list(b"a@x.example, b@y.example c", &completion()).unwrap_err();
        assert_eq!(e.kind, MissingComma);
        assert_eq!(e.offset, 25);
        let e = parse_list(b"ok@x.y, (open", &completion()).unwrap_err();
        assert_eq!(e.offset, 8);
        assert_eq!(
            e.to_string(),
            "unterminated comment: ( without ) (at byte 8)"
        );
    }

    #[test]
    fn completion_rules() {
        let c = completion();
        assert_eq!(c.complete_host(b"mail"), b"mail.example.org");
        assert_eq!(c.complete_host(b"mail.x"), b"mail.x");
        assert_eq!(c.complete_host(b"mail+"), b"mail.plus.example");
        assert_eq!(c.complete_host(b"[::1]"), b"[::1]");
        let dotless = Completion {
            defaulthost: b"box".to_vec(),
            ..completion()
        };
        assert_eq!(dotless.default_host(), b"box.example.org");
        let no_domain = Completion {
            defaultdomain: Vec::new(),
            ..completion()
        };
        assert_eq!(no_domain.complete_host(b"mail"), b"mail");
        assert_eq!(c.complete_host(b"localhost"), b"localhost");
        assert_eq!(c.complete_host(b"LocalHost"), b"LocalHost");
        let dotless_me = Completion {
            defaulthost: b"vm".to_vec(),
            defaultdomain: b"vm".to_vec(),
            plusdomain: b"vm".to_vec(),
        };
        assert_eq!(dotless_me.default_host(), b"vm");
        assert_eq!(dotless_me.complete_host(b"other"), b"other.vm");
    }

    #[test]
    fn sender_parsing() {
        let c = completion();
        assert_eq!(parse_sender(b"", &c).unwrap(), b"");
        assert_eq!(parse_sender(b" <> ", &c).unwrap(), b"");
        assert_eq!(parse_sender(b"bob", &c).unwrap(), b"bob@host.example");
        assert_eq!(parse_sender(b"Bob <bob@x.y>", &c).unwrap(), b"bob@x.y");
        assert_eq!(
            parse_sender(b"a@x.y, b@x.y", &c).unwrap_err().kind,
            NotOneMailbox
        );
        assert_eq!(
            parse_sender(b"list: ;", &c).unwrap_err().kind,
            NotOneMailbox
        );
        assert_eq!(parse_sender(b"a b", &c).unwrap_err().kind, MissingComma);
    }

    #[test]
    fn formatting() {
        assert_eq!(format_mailbox(b"joe", b"x.y"), b"joe@x.y");
        assert_eq!(format_mailbox(b"joe smith", b"x.y"), b"\"joe smith\"@x.y");
        assert_eq!(format_mailbox(b"a\"b", b"x.y"), b"\"a\\\"b\"@x.y");
        assert_eq!(format_mailbox(b".joe", b"x.y"), b"\".joe\"@x.y");
        assert_eq!(format_mailbox(b"joe", b"x\n.y"), b"joe@x.y");
        assert_eq!(format_phrase(b"Joe Smith"), b"Joe Smith");
        assert_eq!(format_phrase(b"Joe Q. Public"), b"\"Joe Q. Public\"");
        assert_eq!(
            format_phrase(b"Joe\r\nBcc: evil@x.y"),
            b"\"Joe  Bcc: evil@x.y\""
        );
        assert_eq!(format_phrase(b"a\"b\\c"), b"\"a\\\"b\\\\c\"");
        assert_eq!(format_phrase("Jörg".as_bytes()), "Jörg".as_bytes());
        assert_eq!(format_phrase(b""), b"\"\"");
    }
}
