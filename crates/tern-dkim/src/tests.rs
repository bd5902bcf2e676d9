use super::*;

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tern-dkim-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

const MSG: &[u8] =
    b"From: Ann <ann@mail.example.com>\r\nTo: bob@example.org\r\nSubject: hi\r\n\r\nbody\r\n";

#[test]
fn names_in_the_store() {
    assert!(valid_domain("example.com"));
    assert!(valid_domain("a-b.example.co"));
    for bad in [
        "",
        "com",
        "Example.com",
        "a..b",
        "-a.b",
        "a-.b",
        "a b.c",
        "a_b.c",
        "../x.y",
    ] {
        assert!(!valid_domain(bad), "{bad}");
    }
    let long = format!("{}.com", "a".repeat(64));
    assert!(!valid_domain(&long));
    assert!(valid_selector("tern-202612"));
    assert!(valid_selector("a.b"));
    for bad in ["", "A", "a/b", "..", "a b"] {
        assert!(!valid_selector(bad), "{bad}");
    }
}

#[test]
fn the_from_domain_or_nothing() {
    assert_eq!(from_domain(MSG).as_deref(), Some("mail.example.com"));
    assert_eq!(
        from_domain(b"from: a@EXAMPLE.com, b@example.COM\n\nx\n").as_deref(),
        Some("example.com")
    );
    for bad in [
        &b"To: a@b.c\n\nno from\n"[..],
        b"From: a@b.c\nFrom: d@b.c\n\ntwo From fields\n",
        b"From: a@b.c, d@e.f\n\ntwo domains\n",
        b"From: ann\n\nunqualified\n",
        b"From: <<<@@\n\ngarbage\n",
        b"From: a@[127.0.0.1]\n\nliteral\n",
        b"",
        b"\n\nno header at all\n",
    ] {
        assert_eq!(from_domain(bad), None, "{}", bad.escape_ascii());
    }
    let huge = [
        b"From: a@b.c\nX: ".as_slice(),
        &vec![b'x'; 2 << 20],
        b"\n\n",
    ]
    .concat();
    assert_eq!(from_domain(&huge), None, "header over the bound");
}

fn store_with(dir: &Path, domain: &str, selector: &str, alg: Algorithm) -> Vec<u8> {
    let (pem, public) = generate(alg).unwrap();
    let d = dir.join(DKIM_DIR).join(domain);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join(format!("{selector}.key")), pem).unwrap();
    public
}

#[test]
fn generated_keys_load_and_sign_with_both_algorithms() {
    let dir = scratch("sign");
    let rsa_pub = store_with(&dir, "example.com", "r1", Algorithm::Rsa);
    let ed_pub = store_with(&dir, "example.com", "e1", Algorithm::Ed25519);
    let (keys, errors) = Keys::load(&dir);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(keys.all().len(), 2);
    let e1 = &keys.all()[0];
    assert_eq!(
        (e1.selector.as_str(), e1.algorithm),
        ("e1", Algorithm::Ed25519)
    );
    assert_eq!(e1.public, ed_pub);
    assert_eq!(e1.public.len(), 32);
    let r1 = &keys.all()[1];
    assert_eq!(r1.public, rsa_pub);
    assert!(
        r1.record()
            .starts_with("v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A"),
        "SPKI: {}",
        r1.record()
    );
    assert_eq!(r1.dns_name(), "r1._domainkey.example.com");
    // mail.example.com has no keys of its own: the parent's sign.
    let signed = keys.sign(MSG).unwrap().expect("signed");
    assert_eq!(signed.domain, "example.com");
    assert_eq!(signed.selectors, ["e1", "r1"]);
    let text = String::from_utf8(signed.header.clone()).unwrap();
    assert_eq!(text.matches("DKIM-Signature:").count(), 2, "{text}");
    assert!(!text.contains('\r'));
    assert!(text.ends_with('\n'));
    assert!(text.lines().all(|l| l.len() < 998));
    let unfolded = text.replace("\n\t", "").replace("\n ", "");
    assert!(unfolded.contains("a=ed25519-sha256"), "{unfolded}");
    assert!(unfolded.contains("a=rsa-sha256"), "{unfolded}");
    assert!(unfolded.contains("c=relaxed/relaxed"), "{unfolded}");
    assert!(unfolded.contains("d=example.com"), "{unfolded}");
    let h = unfolded
        .split(';')
        .map(str::trim)
        .find(|t| t.starts_with("h="))
        .unwrap()
        .to_ascii_lowercase();
    assert_eq!(h.matches("from").count(), 2, "From oversigned: {h}");
    assert_eq!(h.matches("subject").count(), 2, "Subject oversigned: {h}");
    // Other domains: nothing.
    assert_eq!(keys.sign(b"From: a@other.org\r\n\r\nx\r\n").unwrap(), None);
    assert_eq!(keys.for_domain("com").len(), 0);
    assert_eq!(keys.for_domain("EXAMPLE.COM.").len(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unusable_entries_are_reported_not_guessed() {
    let dir = scratch("bad");
    let store = dir.join(DKIM_DIR);
    std::fs::create_dir_all(store.join("Example.COM")).unwrap();
    std::fs::create_dir_all(store.join("example.net")).unwrap();
    std::fs::write(store.join("example.net/sel.key"), "not a key\n").unwrap();
    std::fs::write(store.join("example.net/Bad_Sel.key"), "x").unwrap();
    std::fs::write(store.join("example.net/sel.pem"), "x").unwrap();
    std::fs::write(store.join("example.net/sel.txt"), "a record: ignored").unwrap();
    std::fs::write(
        store.join("example.net/big.key"),
        vec![b'A'; MAX_KEY_FILE as usize + 1],
    )
    .unwrap();
    // An EC key (P-256, PKCS#8): DKIM has no such algorithm.
    std::fs::write(
        store.join("example.net/ec.key"),
        "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgevZzL1gdAFr88hb2\nOF/2NxApJCzGCEDdfSp6VQO30hyhRANCAAQRWz+jn65BtOMvdyHKcvjBeBSDZH2r\n1RTwjmYSi9R/zpBnuQ4EiMnCqfMPWiZqB4QdbAd0E7oH50VpuZ1P087G\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let (keys, errors) = Keys::load(&dir);
    assert!(keys.is_empty());
    let texts: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    let has = |needle: &str| texts.iter().any(|t| t.contains(needle));
    assert!(has("Example.COM: not a domain name"), "{texts:?}");
    assert!(has("sel.key: not a PEM private key"), "{texts:?}");
    assert!(has("Bad_Sel.key: not <selector>.key"), "{texts:?}");
    assert!(has("sel.pem: not <selector>.key"), "{texts:?}");
    assert!(has("big.key: larger than"), "{texts:?}");
    assert!(has("ec.key:"), "{texts:?}");
    assert_eq!(texts.len(), 6, "{texts:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn no_store_no_keys_no_errors() {
    let dir = scratch("none");
    let (keys, errors) = Keys::load(&dir);
    assert!(keys.is_empty() && errors.is_empty());
    assert_eq!(keys.sign(MSG).unwrap(), None);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_store_of_one_key_from_pem() {
    let (pem, public) = generate(Algorithm::Ed25519).unwrap();
    let keys = Keys::from_pem("example.com", "one", pem.as_bytes()).unwrap();
    assert_eq!(keys.all()[0].public, public);
    assert!(keys.sign(MSG).unwrap().is_some());
    assert!(Keys::from_pem("example.com", "one", b"garbage").is_err());
    assert!(Keys::from_pem("localhost", "one", pem.as_bytes()).is_err());
    assert!(Keys::from_pem("example.com", "a/b", pem.as_bytes()).is_err());
}
