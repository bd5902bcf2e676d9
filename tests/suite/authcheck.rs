//! Inbound authentication checks (`control/authcheck`): tern-smtpd over
//! pipes as a non-relay client from 127.0.0.1, tern-verify asking a real
//! DNS server on loopback (dnsmasq) with real TXT records: SPF pass, fail,
//! softfail and none; a message signed by python3-dkim that passes DKIM,
//! and the same altered after signing that fails; DMARC `p=reject` refused
//! at DATA (and only tagged in `tag` mode), `p=quarantine` tagged; a DNS
//! error under `p=reject` answered 451, under `p=quarantine` accepted; our
//! own forged `Authentication-Results` removed and a foreign one kept;
//! relay clients not checked; a missing checker costs no mail; BDAT; and
//! tern-start running the checker for a delivery to a Maildir.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use tern_tests::{
    Daemon, DnsRecord, Dnsmasq, Instance, have_tool, skip, strip_received, wait_until,
};

const PY: &str = "/usr/bin/python3";

/// A running tern-verify for an instance; stopped (fd 0 closed, then
/// waited for, killed if need be) when dropped.
struct Verify {
    child: Option<Child>,
    log: std::path::PathBuf,
}

impl Verify {
    fn start(inst: &Instance) -> Verify {
        let log = inst.scratch().join("verify.log");
        let f = std::fs::File::create(&log).unwrap();
        let child = inst
            .command("tern-verify")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::from(f))
            .spawn()
            .expect("start tern-verify");
        let sock = inst.home().join("verify/socket");
        assert!(
            wait_until(10, || sock.exists()),
            "tern-verify did not listen: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Verify {
            child: Some(child),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Verify {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            drop(c.stdin.take());
            if !wait_until(5, || matches!(c.try_wait(), Ok(Some(_)))) {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
    }
}

/// A DKIM key pair made with openssl: the private key file and the
/// public key's base64 DER (for the `p=` tag).
fn dkim_key(dir: &Path) -> (std::path::PathBuf, String) {
    let key = dir.join("dkim.pem");
    let st = Command::new("openssl")
        .args(["genrsa", "-out"])
        .arg(&key)
        .arg("1024")
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let out = Command::new("openssl")
        .args(["rsa", "-pubout", "-outform", "DER", "-in"])
        .arg(&key)
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success());
    let b64 = Command::new("base64")
        .arg("-w0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(&out.stdout)?;
            c.wait_with_output()
        })
        .unwrap();
    (
        key,
        String::from_utf8(b64.stdout).unwrap().trim().to_string(),
    )
}

/// `message` (CRLF) signed by python3-dkim for `domain`, selector `sel`.
fn dkim_sign(key: &Path, domain: &str, message: &str) -> String {
    let script = "import sys, dkim\n\
        key = open(sys.argv[1], 'rb').read()\n\
        msg = sys.stdin.buffer.read()\n\
        sig = dkim.sign(msg, b'sel', sys.argv[2].encode(), key,\n\
                        include_headers=[b'from', b'to', b'subject'])\n\
        sys.stdout.buffer.write(sig + msg)\n";
    let mut c = Command::new(PY)
        .args(["-c", script])
        .arg(key)
        .arg(domain)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(message.as_bytes())
        .unwrap();
    let out = c.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "dkim sign: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `message` (CRLF, holding an Authentication-Results of `domain`) with
/// an ARC set for `domain` added by python3-dkim, selector `sel`.
fn arc_seal(key: &Path, domain: &str, message: &str) -> String {
    let script = "import sys, dkim\n\
        key = open(sys.argv[1], 'rb').read()\n\
        msg = sys.stdin.buffer.read()\n\
        d = sys.argv[2].encode()\n\
        sig = dkim.arc_sign(msg, b'sel', d, key, d,\n\
                            include_headers=[b'from', b'to', b'subject'])\n\
        sys.stdout.buffer.write(b''.join(sig) + msg)\n";
    let mut c = Command::new(PY)
        .args(["-c", script])
        .arg(key)
        .arg(domain)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(message.as_bytes())
        .unwrap();
    let out = c.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "arc sign: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn tools_missing(test: &str) -> bool {
    for t in ["openssl", "base64"] {
        if !have_tool(t) {
            skip(test, &format!("{t} not installed"));
            return true;
        }
    }
    if tern_tests::dnsmasq_program().is_none() {
        skip(test, "dnsmasq not installed (Debian package dnsmasq-base)");
        return true;
    }
    let dkim = Command::new(PY)
        .args(["-c", "import dkim, authres"])
        .stderr(Stdio::null())
        .status();
    if !dkim.is_ok_and(|s| s.success()) {
        skip(test, "python3-dkim or python3-authres not installed");
        return true;
    }
    false
}

fn me(inst: &Instance) -> String {
    std::fs::read_to_string(inst.home().join("control/me"))
        .unwrap()
        .trim()
        .to_string()
}

/// What one tern-smtpd run produced.
struct Run {
    out: String,
    log: String,
}

/// One SMTP session from 127.0.0.1: EHLO `helo`, one message from
/// `sender` to test@me, QUIT. `env` adds variables (RELAYCLIENT).
fn session(inst: &Instance, env: &[(&str, &str)], helo: &str, sender: &str, msg: &str) -> Run {
    let data = msg.replace("\r\n", "\n").replace('\n', "\r\n");
    let input = format!(
        "EHLO {helo}\r\nMAIL FROM:<{sender}>\r\nRCPT TO:<test@{}>\r\nDATA\r\n{data}.\r\nQUIT\r\n",
        me(inst)
    );
    run(inst, env, input.as_bytes())
}

fn run(inst: &Instance, env: &[(&str, &str)], input: &[u8]) -> Run {
    let mut c = inst.command("tern-smtpd");
    for v in [
        "RELAYCLIENT",
        "DATABYTES",
        "TCPREMOTEHOST",
        "TERN_TARPIT_MS",
    ] {
        c.env_remove(v);
    }
    c.env("TCPREMOTEIP", "127.0.0.1");
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let w = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    let _ = w.join();
    Run {
        out: String::from_utf8_lossy(&out.stdout).into_owned(),
        log: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The reply to DATA's end: the line after `354`.
fn data_reply(r: &Run) -> &str {
    let mut lines = r.out.split("\r\n");
    for l in lines.by_ref() {
        if l.starts_with("354") {
            break;
        }
    }
    lines.next().unwrap_or("")
}

/// The ids of the queued messages.
fn ids(inst: &Instance) -> Vec<u64> {
    inst.queue()
        .list()
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect()
}

/// The messages queued that are not in `before` (tern-queue's own
/// Received line removed).
fn queued_since(inst: &Instance, before: &[u64]) -> Vec<String> {
    let q = inst.queue();
    q.list()
        .unwrap()
        .into_iter()
        .filter(|m| !before.contains(&m.id))
        .map(|m| {
            let stored = q.read_message(m.id).unwrap();
            String::from_utf8_lossy(strip_received(&stored).1).into_owned()
        })
        .collect()
}

/// The `Authentication-Results:` fields of a message's header, unfolded.
fn results(msg: &str) -> Vec<String> {
    let head = msg.split("\n\n").next().unwrap_or("");
    let mut fields: Vec<String> = Vec::new();
    for line in head.split('\n') {
        if line.starts_with([' ', '\t']) {
            if let Some(f) = fields.last_mut() {
                f.push(' ');
                f.push_str(line.trim());
            }
        } else {
            fields.push(line.to_string());
        }
    }
    fields
        .into_iter()
        .filter(|f| {
            f.to_ascii_lowercase()
                .starts_with("authentication-results:")
        })
        .collect()
}

fn msg(from: &str, subject: &str) -> String {
    format!("From: <{from}>\nTo: <test@example.net>\nSubject: {subject}\n\nHello.\n")
}

struct World {
    inst: Instance,
    _dns: Dnsmasq,
    key: std::path::PathBuf,
}

fn world(test: &str, mode: &str) -> Option<World> {
    if tools_missing(test) {
        return None;
    }
    let inst = Instance::new(test);
    let (key, public) = dkim_key(inst.scratch());
    let records = vec![
        DnsRecord::txt("pass.test", "v=spf1 ip4:127.0.0.1 -all"),
        DnsRecord::txt("fail.test", "v=spf1 -all"),
        DnsRecord::txt("soft.test", "v=spf1 ~all"),
        DnsRecord::txt("dkim.test", "v=spf1 -all"),
        DnsRecord::txt(
            "sel._domainkey.dkim.test",
            &format!("v=DKIM1; k=rsa; p={public}"),
        ),
        DnsRecord::txt("_dmarc.dkim.test", "v=DMARC1; p=reject"),
        DnsRecord::txt(
            "sel._domainkey.arc.test",
            &format!("v=DKIM1; k=rsa; p={public}"),
        ),
        DnsRecord::txt("reject.test", "v=spf1 -all"),
        DnsRecord::txt("_dmarc.reject.test", "v=DMARC1; p=reject"),
        DnsRecord::txt("quar.test", "v=spf1 -all"),
        DnsRecord::txt("_dmarc.quar.test", "v=DMARC1; p=quarantine"),
        DnsRecord::txt("_dmarc.tempfail.test", "v=DMARC1; p=reject"),
        DnsRecord::dead("dead.tempfail.test"),
        DnsRecord::txt("_dmarc.tempquar.test", "v=DMARC1; p=quarantine"),
        DnsRecord::dead("dead.tempquar.test"),
    ];
    let dns = Dnsmasq::start(inst.scratch(), &records);
    dns.use_for(&inst);
    std::fs::write(inst.home().join("control/authcheck"), format!("{mode}\n")).unwrap();
    std::fs::write(inst.home().join("control/timeoutauthcheck"), "5\n").unwrap();
    Some(World {
        inst,
        _dns: dns,
        key,
    })
}

/// Sends one message, returns the DATA reply and the single queued
/// message (none when refused).
fn one(w: &World, helo: &str, sender: &str, message: &str) -> (String, Option<String>, String) {
    let before = ids(&w.inst);
    let r = session(&w.inst, &[], helo, sender, message);
    let reply = data_reply(&r).to_string();
    let mut q = queued_since(&w.inst, &before);
    assert!(q.len() <= 1, "{q:?}");
    (reply, q.pop(), r.log)
}

#[test]
fn spf_dkim_dmarc_results() {
    let Some(w) = world("authcheck-results", "enforce") else {
        return;
    };
    let v = Verify::start(&w.inst);
    let me = me(&w.inst);
    let ctx = |log: &str| format!("--- smtpd:\n{log}\n--- verify:\n{}", v.log());

    // SPF, MAIL FROM identity: pass, fail, softfail, none. The HELO
    // identity has no record: none.
    for (domain, want) in [
        ("pass.test", "spf=pass"),
        ("fail.test", "spf=fail"),
        ("soft.test", "spf=softfail"),
        ("none.test", "spf=none"),
    ] {
        let sender = format!("a@{domain}");
        let (reply, m, log) = one(&w, "helo.test", &sender, &msg(&sender, domain));
        assert!(reply.starts_with("250"), "{domain}: {reply}\n{}", ctx(&log));
        let m = m.expect("queued");
        let ar = results(&m);
        assert_eq!(ar.len(), 1, "{m}");
        let ar = &ar[0];
        assert!(
            ar.starts_with(&format!("Authentication-Results: {me};")),
            "{ar}"
        );
        assert!(
            ar.contains(&format!("{want} ")) && ar.contains(&format!("smtp.mailfrom={sender}")),
            "{domain}: {ar}"
        );
        assert!(
            ar.contains("spf=none") && ar.contains("smtp.helo=helo.test"),
            "{ar}"
        );
        // On top (above our Received line).
        assert!(m.starts_with("Authentication-Results:"), "{m}");
        assert!(m.contains("\nReceived: from "), "{m}");
    }

    // DKIM: signed by python3-dkim, passes; DMARC passes through DKIM
    // alignment although SPF fails (p=reject): accepted.
    let signed = dkim_sign(
        &w.key,
        "dkim.test",
        &msg("a@dkim.test", "signed").replace('\n', "\r\n"),
    );
    let (reply, m, log) = one(&w, "helo.test", "a@dkim.test", &signed);
    assert!(reply.starts_with("250"), "{reply}\n{}", ctx(&log));
    let ar = results(&m.unwrap()).join("\n");
    assert!(
        ar.contains("dkim=pass header.i=@dkim.test header.s=sel"),
        "{ar}"
    );
    assert!(ar.contains("spf=fail"), "{ar}");
    assert!(
        ar.contains("dmarc=pass") && ar.contains("policy.dmarc=reject"),
        "{ar}"
    );

    // ARC: a forwarder (arc.test) sealed the message after its own
    // checks (python3-dkim's arc_sign over its Authentication-Results):
    // the chain validates. The same chain over an altered body fails.
    let sealed = arc_seal(
        &w.key,
        "arc.test",
        &format!(
            "Authentication-Results: arc.test; spf=pass smtp.mailfrom=a@pass.test\r\n{}",
            msg("a@pass.test", "forwarded").replace('\n', "\r\n")
        ),
    );
    let (reply, m, log) = one(&w, "helo.test", "a@pass.test", &sealed);
    assert!(reply.starts_with("250"), "{reply}\n{}", ctx(&log));
    let ar = results(&m.unwrap()).join("\n");
    assert!(ar.contains("arc=pass"), "{ar}");
    let broken = sealed.replace("Hello.", "Hello, changed.");
    let (reply, m, log) = one(&w, "helo.test", "a@pass.test", &broken);
    assert!(reply.starts_with("250"), "{reply}\n{}", ctx(&log));
    let ar = results(&m.unwrap()).join("\n");
    // (mail-auth reports a body that no longer matches the seal as
    // neutral, "body hash did not verify"; never pass)
    assert!(
        !ar.contains("arc=pass") && (ar.contains("arc=fail") || ar.contains("arc=neutral")),
        "{ar}"
    );

    // The same message altered after signing: DKIM fails, DMARC fails,
    // p=reject: 550 5.7.1 at the end of DATA, nothing queued.
    let altered = signed.replace("Hello.", "Hello, changed.");
    let (reply, m, log) = one(&w, "helo.test", "a@dkim.test", &altered);
    assert!(reply.starts_with("550 5.7.1"), "{reply}\n{}", ctx(&log));
    assert!(m.is_none());
    assert!(log.contains("verdict=reject"), "{log}");

    // DMARC p=reject, SPF fail, no signature: refused.
    let (reply, m, log) = one(&w, "helo.test", "a@reject.test", &msg("a@reject.test", "r"));
    assert!(reply.starts_with("550 5.7.1"), "{reply}\n{}", ctx(&log));
    assert!(reply.contains("reject.test"), "{reply}");
    assert!(m.is_none());

    // p=quarantine: accepted and tagged.
    let (reply, m, log) = one(&w, "helo.test", "a@quar.test", &msg("a@quar.test", "q"));
    assert!(reply.starts_with("250"), "{reply}\n{}", ctx(&log));
    let ar = results(&m.unwrap()).join("\n");
    assert!(
        ar.contains("dmarc=fail") && ar.contains("policy.dmarc=quarantine"),
        "{ar}"
    );
    assert!(log.contains("verdict=quarantine"), "{log}");

    // A DNS error on the aligned SPF check (the sender domain's server is
    // unreachable) where the policy is reject: 451 4.7.1. The same under
    // quarantine: accepted.
    let (reply, m, log) = one(
        &w,
        "helo.test",
        "a@dead.tempfail.test",
        &msg("a@tempfail.test", "t"),
    );
    assert!(reply.starts_with("451 4.7.1"), "{reply}\n{}", ctx(&log));
    assert!(m.is_none());
    let (reply, m, log) = one(
        &w,
        "helo.test",
        "a@dead.tempquar.test",
        &msg("a@tempquar.test", "t"),
    );
    assert!(reply.starts_with("250"), "{reply}\n{}", ctx(&log));
    let ar = results(&m.unwrap()).join("\n");
    assert!(ar.contains("spf=temperror"), "{ar}");
}

#[test]
fn forged_results_relay_clients_and_tag_mode() {
    let Some(w) = world("authcheck-forged", "tag") else {
        return;
    };
    let v = Verify::start(&w.inst);
    let me = me(&w.inst);
    let forged = format!(
        "Authentication-Results: {me}; dmarc=pass header.from=reject.test\n\
         Authentication-Results: (x) {upper};\n\tspf=pass\n\
         Authentication-Results: other.example; dkim=pass header.d=reject.test\n{}",
        msg("a@reject.test", "forged"),
        upper = me.to_ascii_uppercase()
    );
    // tag mode: the DMARC reject is accepted and tagged; the forged
    // fields claiming our id are gone, the foreign one stays.
    let (reply, m, log) = one(&w, "helo.test", "a@reject.test", &forged);
    assert!(reply.starts_with("250"), "{reply}\n{log}\n{}", v.log());
    let m = m.unwrap();
    let ar = results(&m);
    assert_eq!(ar.len(), 2, "{m}");
    assert!(
        ar[0].starts_with(&format!("Authentication-Results: {me};"))
            && ar[0].contains("dmarc=fail")
            && ar[0].contains("policy.dmarc=reject"),
        "{ar:?}"
    );
    assert_eq!(
        ar[1],
        "Authentication-Results: other.example; dkim=pass header.d=reject.test"
    );
    assert!(
        log.contains("event=authres_removed") && log.contains("fields=2"),
        "{log}"
    );

    // A relay client is not checked: no results added, nothing removed.
    let before = ids(&w.inst);
    let r = session(
        &w.inst,
        &[("RELAYCLIENT", "")],
        "helo.test",
        "a@reject.test",
        &forged,
    );
    assert!(data_reply(&r).starts_with("250"), "{}", r.out);
    let q = queued_since(&w.inst, &before);
    assert_eq!(q.len(), 1);
    assert_eq!(results(&q[0]).len(), 3, "{}", q[0]);
    assert!(!r.log.contains("event=authcheck"), "{}", r.log);

    // BDAT: the same checks.
    let before = ids(&w.inst);
    let body = msg("a@quar.test", "bdat").replace('\n', "\r\n");
    let input = format!(
        "EHLO helo.test\r\nMAIL FROM:<a@quar.test>\r\nRCPT TO:<test@{me}>\r\nBDAT {} LAST\r\nQUIT\r\n",
        body.len()
    )
    .replace("LAST\r\n", &format!("LAST\r\n{body}"));
    let r = run(&w.inst, &[], input.as_bytes());
    assert!(r.out.contains("250 2.0.0 ok"), "{}\n{}", r.out, r.log);
    let q = queued_since(&w.inst, &before);
    assert_eq!(q.len(), 1, "{}", r.log);
    let ar = results(&q[0]).join("\n");
    assert!(ar.contains("policy.dmarc=quarantine"), "{ar}");
}

#[test]
fn a_missing_checker_costs_no_mail() {
    let Some(w) = world("authcheck-down", "enforce") else {
        return;
    };
    // No tern-verify running.
    let (reply, m, log) = one(&w, "helo.test", "a@reject.test", &msg("a@reject.test", "d"));
    assert!(reply.starts_with("250"), "{reply}\n{log}");
    let ar = results(&m.unwrap());
    assert_eq!(
        ar,
        vec![format!("Authentication-Results: {}; none", me(&w.inst))]
    );
    assert!(log.contains("event=authcheck_unavailable"), "{log}");
}

#[test]
fn tern_start_runs_the_checker() {
    let Some(w) = world("authcheck-start", "enforce") else {
        return;
    };
    let mut d = Daemon::start(&w.inst);
    let sock = w.inst.home().join("verify/socket");
    assert!(wait_until(20, || sock.exists()), "{}", d.log());
    let r = session(
        &w.inst,
        &[],
        "helo.test",
        "a@pass.test",
        &msg("a@pass.test", "s"),
    );
    assert!(data_reply(&r).starts_with("250"), "{}\n{}", r.out, r.log);
    assert!(
        wait_until(20, || w.inst.maildir_count("test") == 1),
        "{}",
        d.log()
    );
    let m = String::from_utf8(w.inst.maildir("test").remove(0)).unwrap();
    let ar = results(&m).join("\n");
    assert!(ar.contains("spf=pass"), "{m}");
    d.stop(30);
    assert!(wait_until(10, || !sock.exists()), "{}", d.log());
}
