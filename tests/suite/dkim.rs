//! DKIM signing on the way out, checked by an independent implementation:
//! Debian's python3-dkim (dkimpy, with python3-nacl for Ed25519) verifies
//! what an aiosmtpd peer received, with the public keys exactly as
//! `ternctl dkim show` prints them for DNS. Mail enters by `sendmail`, by
//! SMTP (tern-listen → tern-smtpd) and by a `.qmail` forward; it carries
//! 8-bit text, lines over 998 octets (broken on the way out), dot lines
//! and bare CRs, so every conversion tern-remote makes is inside the
//! signature.

use std::collections::BTreeMap;
use std::path::Path;
use tern_tests::{Front, Instance, PYTHON, Peer, PeerOptions, python, skip};

const FAR: &str = "far.test";

/// Verifies every DKIM-Signature of the message in argv[1] with the TXT
/// records of the JSON map in argv[2]; prints one line per signature:
/// `<d> <s> <a> ok|FAIL`.
const VERIFY: &str = r#"
import sys, json, re, dkim
msg = open(sys.argv[1], 'rb').read()
recs = json.load(open(sys.argv[2]))
def dnsfunc(name, timeout=5):
    n = name.decode() if isinstance(name, bytes) else name
    return recs.get(n.rstrip('.'), '').encode()
d = dkim.DKIM(msg, minkey=1024)
n = len(re.findall(rb'(?mi)^DKIM-Signature:', msg.split(b'\r\n\r\n', 1)[0]))
for i in range(n):
    try:
        ok = d.verify(idx=i, dnsfunc=dnsfunc)
    except dkim.ValidationError as e:
        print('#', e)
        ok = False
    f = d.signature_fields
    print(f[b'd'].decode(), f[b's'].decode(), f[b'a'].decode(), 'ok' if ok else 'FAIL')
"#;

fn usable() -> bool {
    Path::new(PYTHON).is_file() && python("import dkim, nacl, aiosmtpd", &[]).0 == 0
}

fn sender(name: &str) -> (Instance, Peer) {
    let inst = Instance::new(name);
    let c = inst.home().join("control");
    std::fs::write(c.join("timeoutconnect"), "10\n").unwrap();
    std::fs::write(c.join("timeoutremote"), "60\n").unwrap();
    let peer = Peer::on_free_port(inst.scratch(), &PeerOptions::default());
    std::fs::write(
        c.join("smtproutes"),
        format!("{FAR}:[127.0.0.1]:{}\n", peer.port()),
    )
    .unwrap();
    (inst, peer)
}

fn ternctl(inst: &Instance, args: &[&str]) -> String {
    let out = inst
        .command("ternctl")
        .arg("--home")
        .arg(inst.home())
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "ternctl {args:?}: {text}");
    text
}

/// Makes an RSA and an Ed25519 key for example.com; returns the TXT
/// records as `ternctl dkim show` prints them (name → value).
fn keys(inst: &Instance) -> BTreeMap<String, String> {
    ternctl(inst, &["dkim", "new", "example.com", "--selector", "s1"]);
    ternctl(
        inst,
        &[
            "dkim",
            "new",
            "example.com",
            "--selector",
            "s2",
            "--algorithm",
            "ed25519",
        ],
    );
    let shown = ternctl(inst, &["dkim", "show"]);
    let mut records = BTreeMap::new();
    for line in shown.lines() {
        let Some((name, value)) = line.trim().split_once(". IN TXT ") else {
            continue;
        };
        // Zone-file form: quoted strings, joined.
        let joined: String = value
            .split('"')
            .enumerate()
            .filter(|(i, _)| i % 2 == 1)
            .map(|(_, s)| s)
            .collect();
        records.insert(name.to_string(), joined);
    }
    assert_eq!(records.len(), 2, "{shown}");
    assert!(records["s1._domainkey.example.com"].starts_with("v=DKIM1; k=rsa; p="));
    assert!(records["s2._domainkey.example.com"].starts_with("v=DKIM1; k=ed25519; p="));
    records
}

fn once(inst: &Instance) -> String {
    let out = inst.command("tern-start").arg("--once").output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "tern-start --once failed:\n{log}");
    log
}

/// dkimpy's verdict on `data`: one `(d, s, a, ok)` per signature.
fn verify(inst: &Instance, data: &[u8], records: &BTreeMap<String, String>) -> Vec<String> {
    let dir = inst.scratch();
    let m = dir.join(format!("verify-{}.eml", data.len()));
    let r = dir.join("records.json");
    std::fs::write(&m, data).unwrap();
    std::fs::write(&r, serde_json::to_vec(records).unwrap()).unwrap();
    let (code, out) = python(VERIFY, &[m.to_str().unwrap(), r.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    out.lines()
        .filter(|l| !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

fn body() -> String {
    let long: String = (0..400).map(|i| format!("mot-{i:03} ")).collect();
    format!(
        "8-bit: Grüße, 日本語, 😀\n.a line that begins with a dot\n..two\n\
         a bare\rCR\n{long}\n{}\n\nlast line without LF",
        "x".repeat(3000)
    )
}

fn both_ok(lines: &[String], d: &str) {
    assert_eq!(
        lines,
        &[
            format!("{d} s1 rsa-sha256 ok"),
            format!("{d} s2 ed25519-sha256 ok")
        ],
    );
}

#[test]
fn sendmail_smtp_and_forwarded_mail_leaves_signed_and_verifies() {
    let t = "dkim::sendmail_smtp_and_forwarded_mail_leaves_signed_and_verifies";
    if !usable() {
        skip(
            t,
            "python3-dkim, python3-nacl or python3-aiosmtpd missing under /usr/bin/python3",
        );
        return;
    }
    let (inst, peer) = sender("dkim-sign");
    let records = keys(&inst);

    // 1. sendmail, From: the signing domain.
    let msg = format!(
        "From: Ann <ann@example.com>\nTo: bob@{FAR}\nSubject: by sendmail\n\n{}",
        body()
    );
    let (code, err) = inst.sendmail(
        &["-f", "ann@example.com", &format!("bob@{FAR}")],
        msg.as_bytes(),
    );
    assert_eq!(code, 0, "{err}");
    // 2. A forward: a local address whose .qmail sends it on.
    std::fs::write(
        inst.home().join("mail/test/.qmail-fw"),
        format!("&carol@{FAR}\n"),
    )
    .unwrap();
    let fw = format!(
        "From: dave@mail.example.com\nTo: test-fw@localhost\nSubject: forwarded\n\n{}",
        body()
    );
    let (code, err) = inst.sendmail(
        &["-f", "dave@mail.example.com", "test-fw@localhost"],
        fw.as_bytes(),
    );
    assert_eq!(code, 0, "{err}");
    // 3. Not ours: a From: domain without keys goes unsigned.
    let other = "From: eve@elsewhere.org\nSubject: not ours\n\nhello\n";
    let (code, err) = inst.sendmail(
        &["-f", "eve@elsewhere.org", &format!("frank@{FAR}")],
        other.as_bytes(),
    );
    assert_eq!(code, 0, "{err}");
    let mut log = once(&inst);
    if peer.messages().len() < 3 {
        log.push_str(&once(&inst)); // the forwarded copy was queued by the first run
    }
    // 4. SMTP, through tern-listen and tern-smtpd (a relay client).
    let front = Front::listen(&inst, "127.0.0.1:allow,RELAYCLIENT=\"\"\n:deny\n", &[]);
    let smtp = format!(
        "import smtplib, sys\n\
         s = smtplib.SMTP('127.0.0.1', {})\n\
         s.sendmail('gina@example.com', ['hank@{FAR}'], sys.argv[1].encode())\n\
         s.quit()\n",
        front.port
    );
    let smtp_msg = format!(
        "From: gina@example.com\r\nTo: hank@{FAR}\r\nSubject: by SMTP\r\n\r\n{}\r\n",
        // (no bare CR: tern-smtpd refuses one over SMTP)
        body().replace('\r', "").replace('\n', "\r\n")
    );
    let (code, out) = python(&smtp, &[&smtp_msg]);
    assert_eq!(code, 0, "{out}");
    log.push_str(&once(&inst));
    drop(front);

    let got = peer.messages();
    assert_eq!(got.len(), 4, "{log}\n--- peer:\n{}", peer.log());
    let by_rcpt = |r: &str| {
        got.iter()
            .find(|m| m.rcpt_tos.iter().any(|x| x == r))
            .unwrap_or_else(|| panic!("nothing for {r}"))
            .data
            .clone()
    };
    for (rcpt, what) in [("bob", "sendmail"), ("carol", "forward"), ("hank", "SMTP")] {
        let data = by_rcpt(&format!("{rcpt}@{FAR}"));
        let lines = verify(&inst, &data, &records);
        assert_eq!(lines.len(), 2, "{what}: {lines:?}");
        both_ok(&lines, "example.com");
        // The long line really was broken on the way, inside the signature.
        assert!(
            data.split(|&b| b == b'\n').all(|l| l.len() <= 1000),
            "{what}: a line over 998 octets"
        );
        // And a change after signing is caught (the verifier can fail).
        let mut bad = data.clone();
        let at = bad.len() - 5;
        bad[at] ^= 0x01;
        let lines = verify(&inst, &bad, &records);
        assert!(
            lines.iter().all(|l| l.ends_with("FAIL")),
            "{what} altered: {lines:?}"
        );
    }
    let unsigned = by_rcpt(&format!("frank@{FAR}"));
    assert!(
        !String::from_utf8_lossy(&unsigned).contains("DKIM-Signature"),
        "a From: without keys was signed"
    );
    assert!(log.contains("event=dkim_signed"), "{log}");
}

#[test]
fn dkim_new_never_replaces_a_key_and_check_explains_a_broken_one() {
    let inst = Instance::new("dkim-check");
    let out = ternctl(&inst, &["dkim", "new", "example.com", "--selector", "s1"]);
    assert!(
        out.contains("s1._domainkey.example.com. IN TXT \"v=DKIM1; k=rsa; p="),
        "{out}"
    );
    let key = inst.home().join("control/dkim/example.com/s1.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600,
        "a single-user instance's key is its owner's only"
    );
    let before = std::fs::read(&key).unwrap();
    let again = inst
        .command("ternctl")
        .arg("--home")
        .arg(inst.home())
        .args(["dkim", "new", "example.com", "--selector", "s1"])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("never replaced"));
    assert_eq!(std::fs::read(&key).unwrap(), before);
    for bad in [
        &["dkim", "new", "localhost"][..],
        &["dkim", "new", "example.com", "--selector", "a/b"],
    ] {
        let o = inst
            .command("ternctl")
            .arg("--home")
            .arg(inst.home())
            .args(bad)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{bad:?}");
    }

    let check = |inst: &Instance| {
        inst.command("ternctl")
            .arg("--home")
            .arg(inst.home())
            .arg("check")
            .output()
            .unwrap()
    };
    let ok = check(&inst);
    let text = String::from_utf8_lossy(&ok.stdout).into_owned();
    assert!(
        text.contains("dkim: example.com signs with selector s1 (rsa)"),
        "{text}"
    );
    assert!(ok.status.success(), "{text}");
    assert!(!text.contains("control/dkim: warning"), "{text}");
    // A key anyone can read, a damaged key: errors, in words.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(
        inst.home().join("control/dkim/example.com/s9.key"),
        "garbage\n",
    )
    .unwrap();
    let bad = check(&inst);
    let text = String::from_utf8_lossy(&bad.stdout).into_owned();
    assert_eq!(bad.status.code(), Some(1), "{text}");
    assert!(text.contains("is readable by every user"), "{text}");
    assert!(text.contains("s9.key: not a PEM private key"), "{text}");
}
