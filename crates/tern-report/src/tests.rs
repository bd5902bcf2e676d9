use super::*;

const LOG: &str = "\
@400000006957355f00000000 tern-send: event=new qid=7 size=300 sender=a@x.test rcpts=2 uid=0
@400000006957355f00000001 tern-send: event=delivery_start qid=7 channel=local rcpt=u@localhost slot=0
@400000006957355f00000002 tern-send: event=delivery_end qid=7 channel=local rcpt=u@localhost status=delivered delay=0 text=\"did 1+0+0\"
@400000006957355f00000003 tern-remote: event=rcpt qid=7 rcpt=v@R.test result=delivered host=r.test ip=127.0.0.1 tls=yes reason=\"250 ok\"
@400000006957355f00000004 tern-send: event=delivery_end qid=7 channel=remote rcpt=v@R.test status=delivered delay=3 text=\"250 ok\"
@4000000069574370000000aa tern-send: event=new qid=8 size=10 sender=\"\" rcpts=1 uid=0
@4000000069574370000000ab tern-send: event=delivery_end qid=8 channel=remote rcpt=w@r.test status=deferred delay=0 text=\"451 try later\"
@4000000069574370000000ac tern-send: event=delivery_end qid=8 channel=remote rcpt=w@r.test status=failed delay=900 text=\"550 no such user\"
@4000000069574370000000ad tern-send: event=bounce qid=8 to=a@x.test failed=1
@4000000069574370000000ae tern-smtpd: event=connect remote_ip=127.0.0.1 remote_host=\"\" remote_info=\"\" local_ip=127.0.0.1 local_port=25 relayclient=no
@4000000069574370000000af tern-smtpd: event=refused command=RCPT code=553 reply=\"5.7.1 sorry, that domain isn't in my list of allowed rcpthosts\"
@4000000069574370000000b0 tern-smtpd: event=queued qp=1.1 from=a@x.test recipients=1 bytes=99 tls=yes
tern-smtpd: event=refused command=MAIL code=451 reply=\"4.3.0 busy\"
this is not a log line
tern-send: event=new qid=9 size=1 sender=\"unterminated
";

fn report() -> Report {
    let mut r = Report::new();
    r.feed_reader(LOG.as_bytes()).unwrap();
    r
}

#[test]
fn counts_what_the_log_says() {
    let j = report().json(10);
    assert_eq!(j["lines"]["read"], 15);
    assert_eq!(j["lines"]["events"], 13);
    assert_eq!(j["lines"]["unparsed"], 2);
    assert_eq!(j["lines"]["untimed"], 1);
    assert_eq!(j["messages"]["received"], 2);
    assert_eq!(j["messages"]["bytes"], 310);
    assert_eq!(j["messages"]["recipients"], 3);
    assert_eq!(j["messages"]["smtp"]["queued"], 1);
    assert_eq!(j["messages"]["smtp"]["connections"], 1);
    assert_eq!(j["messages"]["rejected"]["permanent"], 1);
    assert_eq!(j["messages"]["rejected"]["temporary"], 1);
    assert_eq!(j["messages"]["bounces_sent"], 1);
    assert_eq!(j["recipients"]["delivered"], 2);
    assert_eq!(j["recipients"]["deferred"], 1);
    assert_eq!(j["recipients"]["bounced"], 1);
    assert_eq!(j["recipients"]["local"]["delivered"], 1);
    assert_eq!(j["recipients"]["remote"]["delivered"], 1);
    assert_eq!(j["delay_seconds"]["count"], 2);
    assert_eq!(j["delay_seconds"]["p50"], 0);
    assert_eq!(j["delay_seconds"]["max"], 3);
    assert_eq!(j["tls"]["outbound"]["tls"], 1);
    assert_eq!(j["tls"]["outbound"]["percent"], 100.0);
    assert_eq!(j["tls"]["inbound"]["tls"], 1);
    assert_eq!(j["top"]["senders"]["items"][0]["sender"], "<>");
    assert_eq!(j["top"]["domains"]["items"][0]["domain"], "r.test");
    assert_eq!(
        j["top"]["bounces"]["items"][0]["reason"],
        "550 no such user"
    );
    // 0x6957355f = 2026-01-02 03:04:31 UTC; 0x69574370 an hour later.
    let hours = j["per_hour"].as_array().unwrap();
    assert_eq!(hours.len(), 2, "{hours:?}");
    assert_eq!(hours[0]["hour"], "2026-01-02 03:00");
    assert_eq!(hours[0]["received"], 1);
    assert_eq!(hours[0]["delivered"], 2);
    assert_eq!(hours[1]["received"], 1);
    assert_eq!(hours[1]["bounced"], 1);
    assert_eq!(hours[1]["rejected"], 1);
}

#[test]
fn text_escapes_values_and_limits_top() {
    let mut r = report();
    r.feed(b"tern-send: event=new qid=1 size=1 sender=\\x1b[31m@x rcpts=1");
    let t = r.text(1);
    assert!(t.contains("received (311 bytes"), "{t}");
    assert!(!t.contains('\x1b'), "{t}");
    assert!(t.contains("Top senders"), "{t}");
    let senders = t.split("Top senders\n").nth(1).unwrap();
    assert_eq!(
        senders.lines().take_while(|l| l.starts_with("  ")).count(),
        1,
        "{t}"
    );
}

#[test]
fn garbage_is_counted_never_fatal() {
    let mut input = Vec::new();
    input.extend_from_slice(b"\xff\xfe\x00\x01 tern-send: event=new\n");
    input.extend_from_slice(&vec![b'a'; MAX_LINE * 3]);
    input.extend_from_slice(b"\ntern-send: event=flush\n\n\r\n");
    input.extend_from_slice(b"tern-send: event=new qid=x size=-1 sender=\\x4 rcpts=\n");
    input.extend_from_slice(
        b"tern-send: event=delivery_end status=delivered delay=99999999999999999999\n",
    );
    input.extend_from_slice(b"no newline at the end tern-smtpd: event=queued");
    let mut r = Report::new();
    r.feed_reader(&input[..]).unwrap();
    let j = r.json(5);
    assert_eq!(j["lines"]["too_long"], 1, "{j}");
    // The first line's prefix is the logger's business: it is an event.
    assert_eq!(j["lines"]["unparsed"], 2, "{j}");
    assert_eq!(j["lines"]["events"], 4, "{j}");
    assert_eq!(j["messages"]["received"], 1);
    // Missing addresses are not counted as addresses.
    assert_eq!(
        j["top"]["senders"]["items"].as_array().unwrap().len(),
        0,
        "{j}"
    );
    assert_eq!(
        j["top"]["recipients"]["items"].as_array().unwrap().len(),
        0,
        "{j}"
    );
    assert_eq!(j["messages"]["smtp"]["queued"], 1);
    assert_eq!(j["recipients"]["local"]["delivered"], 1);
    assert_eq!(j["delay_seconds"]["count"], 0);
    let _ = r.text(5);
}

#[test]
fn reader_splits_lines_across_buffers() {
    let mut r = Report::new();
    let reader = std::io::BufReader::with_capacity(7, LOG.as_bytes());
    r.feed_reader(reader).unwrap();
    assert_eq!(r.json(3), report().json(3));
}

#[test]
fn hours_are_bounded() {
    let mut r = Report::new();
    for h in 0..(MAX_HOURS as u64 + 10) {
        let line = format!(
            "@{:016x}00000000 tern-send: event=new qid=1 size=1 sender=a rcpts=1",
            (1u64 << 62) + 10 + h * 3600
        );
        r.feed(line.as_bytes());
    }
    assert_eq!(r.hours.len(), MAX_HOURS);
    assert_eq!(r.hours_dropped, 10);
    // An hour older than everything kept is dropped, not inserted.
    r.feed(b"@400000000000000a00000000 tern-send: event=new qid=1 size=1 sender=a rcpts=1");
    assert_eq!(r.hours.len(), MAX_HOURS);
    assert_eq!(r.hours_dropped, 11);
}
