//! `ternctl dkim new|show` and the DKIM part of `ternctl check`: keys in
//! `control/dkim/<domain>/<selector>.key` (tern-dkim), readable only by the
//! uid that signs (`ternr` in a system instance, the owner in a
//! single-user one), and the DNS records to publish.

use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result};
use tern_control::Home;
use tern_dkim::{Algorithm, DKIM_DIR, Keys};

use crate::Usage;
use crate::show::emit;

/// The user that signs in a system instance.
const SIGNER: &str = "ternr";

/// `--algorithm`'s values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AlgorithmArg {
    /// rsa-sha256, 2048 bits (what every verifier knows).
    Rsa,
    /// ed25519-sha256 (RFC 8463), usually beside an RSA key.
    Ed25519,
}

/// The owner and group of the store and its keys, and their modes.
struct Owners {
    uid: Option<u32>,
    gid: Option<u32>,
    dir_mode: u32,
    key_mode: u32,
}

fn owners(home: &Home) -> Result<Owners> {
    if home.is_single_user() {
        return Ok(Owners {
            uid: None,
            gid: None,
            dir_mode: 0o700,
            key_mode: 0o600,
        });
    }
    let group = nix::unistd::Group::from_name(SIGNER)
        .ok()
        .flatten()
        .with_context(|| {
            format!("no group {SIGNER}: is this a system instance (ternctl install)?")
        })?;
    Ok(Owners {
        uid: Some(0),
        gid: Some(group.gid.as_raw()),
        dir_mode: 0o750,
        key_mode: 0o640,
    })
}

fn make_dir(path: &Path, o: &Owners) -> Result<()> {
    match std::fs::create_dir(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let st = std::fs::symlink_metadata(path)?;
            anyhow::ensure!(
                st.is_dir(),
                "{} exists and is not a directory",
                path.display()
            );
            return Ok(());
        }
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", path.display())),
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(o.dir_mode))?;
    if o.uid.is_some() || o.gid.is_some() {
        std::os::unix::fs::chown(path, o.uid, o.gid)
            .with_context(|| format!("cannot chown {}", path.display()))?;
    }
    Ok(())
}

fn default_selector(algorithm: Algorithm) -> String {
    let (y, m, _) = tern_date::civil_from_days(tern_date::now().div_euclid(86_400));
    format!("{}-{y:04}{m:02}", algorithm.dns_name())
}

/// The TXT value as a zone file wants it: quoted strings of at most 255
/// octets each (RFC 1035 character-strings).
pub fn zone_strings(record: &str) -> String {
    record
        .as_bytes()
        .chunks(255)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `ternctl dkim new DOMAIN`.
pub fn new_key(
    home: &Home,
    domain: &str,
    selector: Option<&str>,
    algorithm: AlgorithmArg,
) -> Result<()> {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    if !tern_dkim::valid_domain(&domain) {
        return Err(Usage(format!(
            "{domain}: not a domain name (letters, digits, hyphens; at least two labels)"
        ))
        .into());
    }
    let algorithm = match algorithm {
        AlgorithmArg::Rsa => Algorithm::Rsa,
        AlgorithmArg::Ed25519 => Algorithm::Ed25519,
    };
    let selector = selector
        .map(str::to_ascii_lowercase)
        .unwrap_or_else(|| default_selector(algorithm));
    if !tern_dkim::valid_selector(&selector) {
        return Err(Usage(format!(
            "--selector {selector}: letters, digits, hyphens and dots only"
        ))
        .into());
    }
    let o = owners(home)?;
    let store = home.control_dir().join(DKIM_DIR);
    make_dir(&store, &o)?;
    let dir = store.join(&domain);
    make_dir(&dir, &o)?;
    let path = dir.join(format!("{selector}.key"));
    if std::fs::symlink_metadata(&path).is_ok() {
        return Err(Usage(format!(
            "{} exists: a key is never replaced (choose another --selector, publish it, \
             then remove the old file)",
            path.display()
        ))
        .into());
    }
    let (pem, public) = tern_dkim::generate(algorithm).map_err(anyhow::Error::msg)?;
    // Written under a temporary name with its final mode and owner, synced,
    // then linked: the key is never readable by others, never half written.
    let tmp = dir.join(format!(".{selector}.key.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(o.key_mode)
        .custom_flags(libc_nofollow())
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    let done = (|| -> Result<()> {
        f.set_permissions(std::fs::Permissions::from_mode(o.key_mode))?;
        if o.uid.is_some() || o.gid.is_some() {
            std::os::unix::fs::fchown(&f, o.uid, o.gid)?;
        }
        f.write_all(pem.as_bytes())?;
        f.sync_all()?;
        std::fs::hard_link(&tmp, &path)?;
        Ok(())
    })();
    let _ = std::fs::remove_file(&tmp);
    done.with_context(|| format!("cannot write {}", path.display()))?;
    std::fs::File::open(&dir).and_then(|d| d.sync_all())?;
    let record = tern_dkim::record(algorithm, &public);
    let name = format!("{selector}._domainkey.{domain}");
    emit(&format!(
        "created {} ({algorithm})\n\
         publish this TXT record, then mail from {domain} is signed with it:\n\
         {name}. IN TXT {}\n\
         (the value on one line: {record})\n",
        path.display(),
        zone_strings(&record),
    ));
    Ok(())
}

fn libc_nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

/// `ternctl dkim show`.
pub fn show(home: &Home) -> Result<()> {
    let (keys, problems) = Keys::load(&home.control_dir());
    let mut out = String::new();
    if keys.is_empty() && problems.is_empty() {
        let _ = writeln!(
            out,
            "no DKIM keys in {} (ternctl dkim new DOMAIN makes one)",
            home.control_dir().join(DKIM_DIR).display()
        );
    }
    for k in keys.all() {
        let _ = writeln!(
            out,
            "{} selector={} algorithm={} key={}\n  {}. IN TXT {}",
            k.domain,
            k.selector,
            k.algorithm,
            k.path.display(),
            k.dns_name(),
            zone_strings(&k.record())
        );
    }
    for p in &problems {
        let _ = writeln!(out, "unusable: {p}");
    }
    emit(&out);
    Ok(())
}

/// The DKIM lines of `ternctl check`: (text, errors, warnings).
pub fn check(home: &Home) -> (String, usize, usize) {
    let mut out = String::new();
    let (keys, problems) = Keys::load(&home.control_dir());
    let (mut errors, mut warnings) = (0, 0);
    if keys.is_empty() && problems.is_empty() {
        let _ = writeln!(out, "dkim: no keys: outgoing mail is not signed");
        return (out, 0, 0);
    }
    let signer_gid = (!home.is_single_user())
        .then(|| nix::unistd::Group::from_name(SIGNER).ok().flatten())
        .flatten()
        .map(|g| g.gid.as_raw());
    for k in keys.all() {
        let _ = writeln!(
            out,
            "dkim: {} signs with selector {} ({}): publish {}. TXT \"{}\"",
            k.domain,
            k.selector,
            k.algorithm,
            k.dns_name(),
            k.record()
        );
        if let Ok(st) = std::fs::metadata(&k.path) {
            let mode = st.mode() & 0o777;
            if mode & 0o007 != 0 {
                errors += 1;
                let _ = writeln!(
                    out,
                    "dkim: error: {} is readable by every user (mode {mode:o}): anyone could \
                     sign as {}; make it 0640 root:{SIGNER} (or 0600 in a single-user \
                     instance) and replace the key, it may have been copied",
                    k.path.display(),
                    k.domain
                );
            }
            if let Some(gid) = signer_gid
                && (st.gid() != gid || mode & 0o040 == 0)
            {
                errors += 1;
                let _ = writeln!(
                    out,
                    "dkim: error: {} is not readable by group {SIGNER} (owner {}:{}, mode \
                         {mode:o}): tern-remote cannot read it and mail from {} goes out \
                         unsigned; make it 0640 root:{SIGNER}",
                    k.path.display(),
                    st.uid(),
                    st.gid(),
                    k.domain
                );
            }
        }
        if k.algorithm == Algorithm::Ed25519
            && !keys
                .all()
                .iter()
                .any(|o| o.domain == k.domain && o.algorithm == Algorithm::Rsa)
        {
            warnings += 1;
            let _ = writeln!(
                out,
                "dkim: warning: {} has an Ed25519 key but no RSA key: many receivers cannot \
                 verify Ed25519 yet, so to them its mail looks unsigned (add one with \
                 ternctl dkim new {} --algorithm rsa)",
                k.domain, k.domain
            );
        }
    }
    for p in &problems {
        errors += 1;
        let _ = writeln!(out, "dkim: error: {p}: mail is not signed with it");
    }
    (out, errors, warnings)
}
