//! Progress of long work (`repair` on a large queue, `install`), drawn on
//! the terminal by `indicatif` only when standard error is one; otherwise
//! nothing at all, so that logs, pipes and scripts see exactly the
//! line-oriented output they always did.

use std::borrow::Cow;
use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress bar, or nothing when standard error is not a terminal.
pub struct Progress(Option<ProgressBar>);

impl Progress {
    /// A bar of `len` steps labelled `what`.
    pub fn new(len: u64, what: &'static str) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress(None);
        }
        let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {wide_msg}")
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_prefix(what);
        // Drawn at once, not at the first step: short work shows too.
        bar.tick();
        Progress(Some(bar))
    }

    /// Moves to step `pos`, saying what is being done.
    pub fn set(&self, pos: u64, msg: impl Into<Cow<'static, str>>) {
        if let Some(b) = &self.0 {
            b.set_position(pos);
            b.set_message(msg);
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}
