//! `ternctl report [FILE...]`: a summary of Tern's logs (tern-report),
//! read from files or stdin, gzip-compressed or not (told by the first two
//! bytes, the gzip magic 1f 8b).

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;

use anyhow::{Context, Result};
use tern_report::Report;

use crate::Usage;

/// The most items a top list may be asked for.
pub const MAX_TOP: usize = tern_report::TOP_CAPACITY;

/// Feeds one input, decompressing it if it starts with the gzip magic.
fn feed(report: &mut Report, input: impl Read, name: &str) -> Result<()> {
    let mut input = BufReader::with_capacity(64 * 1024, input);
    let gzip = input
        .fill_buf()
        .with_context(|| format!("cannot read {name}"))?
        .starts_with(&[0x1f, 0x8b]);
    let result = if gzip {
        let z = flate2::bufread::MultiGzDecoder::new(input);
        report.feed_reader(BufReader::with_capacity(64 * 1024, z))
    } else {
        report.feed_reader(input)
    };
    result.map_err(|e| match e.kind() {
        std::io::ErrorKind::InvalidData
        | std::io::ErrorKind::InvalidInput
        | std::io::ErrorKind::UnexpectedEof
            if gzip =>
        {
            Usage(format!("{name}: bad gzip data: {e}")).into()
        }
        _ => anyhow::anyhow!("cannot read {name}: {e}"),
    })
}

/// Reads every file (stdin when none, or for `-`) and prints the report.
pub fn report(files: &[PathBuf], json: bool, top: usize) -> Result<()> {
    if top > MAX_TOP {
        return Err(Usage(format!("--top {top}: at most {MAX_TOP}")).into());
    }
    let mut report = Report::new();
    if files.is_empty() {
        feed(&mut report, std::io::stdin().lock(), "stdin")?;
    }
    for f in files {
        if f.as_os_str() == "-" {
            feed(&mut report, std::io::stdin().lock(), "stdin")?;
            continue;
        }
        let name = f.display().to_string();
        let file = File::open(f).with_context(|| format!("cannot open {name}"))?;
        feed(&mut report, file, &name)?;
    }
    let mut out = if json {
        report.json(top).to_string()
    } else {
        report.text(top)
    };
    if !out.ends_with('\n') {
        out.push('\n');
    }
    crate::show::emit(&out);
    Ok(())
}
