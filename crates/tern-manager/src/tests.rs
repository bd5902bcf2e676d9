//! Unit tests of the manager's parts.

use crate::common::*;
use crate::dispatch::*;
use crate::ready::Ready;
use crate::spawner::*;
use std::collections::VecDeque;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use tern_ipc::remote::{MAX_RCPTS, RcptReport, RemoteDeliver};
use tern_ipc::{FrameBuffer, Outcome};
use tern_spool::state::Channel;

#[test]
fn a_recipient_is_ready_once() {
    let mut r = Ready::default();
    r.insert(50, 1, 0);
    r.insert(10, 1, 0); // rescheduled: replaces the first entry
    r.insert(20, 2, 3);
    assert_eq!(r.set.len(), 2);
    assert_eq!(r.pop_first(), Some((10, 1, 0)));
    r.remove(2, 3);
    assert!(r.first().is_none());
    assert!(r.due.is_empty());
    r.insert(5, 7, 1);
    assert_eq!(r.take_all(), vec![(5, 7, 1)]);
    assert!(r.due.is_empty() && r.set.is_empty());
}

#[test]
fn domain_is_after_the_last_at_and_lower_case() {
    assert_eq!(domain_of(b"a@B.Example"), b"b.example");
    assert_eq!(domain_of(b"\"x@y\"@Host.Test"), b"host.test");
    assert_eq!(domain_of(b"nodomain"), b"nodomain");
}

#[test]
fn remote_requests_carry_their_descriptors_in_order() {
    use std::io::{Seek, Write as _};
    let (ours, theirs) = tern_ipc::remote::socket_pair().unwrap();
    let from = File::from(ours.try_clone().unwrap());
    let mut sp = Spawner {
        channel: Channel::Remote,
        to: File::from(ours),
        from,
        out: Vec::new(),
        out_fds: VecDeque::new(),
        inbuf: FrameBuffer::default(),
        slots: vec![None; 4],
        free: vec![3, 2, 1, 0],
    };
    for i in 0..4u32 {
        let mut f = tempfile();
        write!(f, "message {i}").unwrap();
        f.rewind().unwrap();
        let req = RemoteDeliver {
            slot: i,
            id: u64::from(i),
            offset: 0,
            size: 9,
            sender: vec![],
            domain: b"d.example".to_vec(),
            recipients: vec![b"x@d.example".to_vec()],
        };
        sp.queue_frame(&req.encode(), Some(OwnedFd::from(f)));
    }
    sp.flush().unwrap();
    assert!(sp.out.is_empty() && sp.out_fds.is_empty());
    drop(sp);
    let mut inbox = tern_ipc::remote::Inbox::default();
    let mut seen = 0;
    while inbox.fill(theirs.as_fd()).unwrap() {
        while let Some(f) = inbox.next_frame().unwrap() {
            let tern_ipc::remote::Frame::Deliver(req, fd) = f else {
                panic!("unexpected frame");
            };
            let mut text = String::new();
            File::from(fd).read_to_string(&mut text).unwrap();
            assert_eq!(text, format!("message {}", req.slot));
            assert_eq!(req.slot, seen);
            seen += 1;
        }
    }
    assert_eq!(seen, 4);
}

/// A spawner that writes its last reports and exits: the reports read
/// together with the end of file are returned (and applied) before the
/// spawner counts as lost, so delivered recipients are not repeated.
#[test]
fn reports_before_end_of_file_are_kept() {
    let (ours, theirs) = tern_ipc::remote::socket_pair().unwrap();
    let mut sp = Spawner {
        channel: Channel::Remote,
        to: File::from(ours.try_clone().unwrap()),
        from: File::from(ours),
        out: Vec::new(),
        out_fds: VecDeque::new(),
        inbuf: FrameBuffer::default(),
        slots: vec![None; 2],
        free: vec![1],
    };
    sp.slots[0] = Some(Slot {
        id: 7,
        indices: vec![3, 5],
        reported: vec![false; 2],
        domain: Some(b"d.example".to_vec()),
        dying: false,
    });
    let mut theirs = File::from(theirs);
    for rcpt in [1u32, 0] {
        let r = RcptReport {
            slot: 0,
            rcpt,
            outcome: Outcome::Delivered,
            text: b"ok".to_vec(),
        };
        tern_ipc::write_frame(&mut theirs, &r.encode()).unwrap();
    }
    drop(theirs);
    let (out, freed, lost) = sp.read_reports();
    let got: Vec<(u64, u32)> = out.iter().map(|r| (r.id, r.index)).collect();
    assert_eq!(got, [(7, 5), (7, 3)]);
    assert_eq!(freed, [b"d.example".to_vec()]);
    assert_eq!(lost.as_deref(), Some("lost the remote spawner"));
    assert!(sp.slots[0].is_none());
}

fn tempfile() -> File {
    let path = std::env::temp_dir().join(format!(
        "tern-send-test-{}-{:?}",
        std::process::id(),
        std::time::SystemTime::now()
    ));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    f
}

#[test]
fn recipients_no_spawner_would_accept_fail_at_once() {
    let long_local = [vec![b'u'; 991], b"@a.example".to_vec()].concat();
    let long_domain = [b"u@".to_vec(), vec![b'd'; 256]].concat();
    let cases: &[(Channel, &[u8], bool)] = &[
        (Channel::Local, b"u@a.example", true),
        (Channel::Remote, b"u@a.example", true),
        (Channel::Local, &long_local[..1000], true),
        (Channel::Local, &long_local, false),
        (Channel::Remote, &long_local, false),
        (Channel::Remote, b"u@", false),
        (Channel::Remote, b"u", true),
        (Channel::Remote, &long_domain, false),
        (Channel::Remote, &long_domain[..257], true),
        // a local address needs no domain of any size here
        (Channel::Local, b"u@", true),
    ];
    for (ch, addr, ok) in cases {
        assert_eq!(unsendable(*ch, addr).is_none(), *ok, "{:?}", addr.len());
    }
}

#[test]
fn a_remote_request_is_cut_to_fit_one_frame() {
    let addr = |i: usize| {
        let mut a = format!("{i:03}").into_bytes();
        a.resize(990, b'x');
        a.extend_from_slice(b"@c.example");
        a
    };
    let mut req = RemoteDeliver {
        slot: 1,
        id: 2,
        offset: 3,
        size: 4,
        sender: vec![b's'; 1000],
        domain: b"c.example".to_vec(),
        recipients: (0..MAX_RCPTS).map(addr).collect(),
    };
    assert!(req.encode().len() > tern_ipc::MAX_FRAME, "the case is real");
    let mut indices: Vec<u32> = (0..MAX_RCPTS as u32).collect();
    fit_frame(&mut req, &mut indices);
    let n = req.recipients.len();
    assert!(n > 1 && n < MAX_RCPTS, "{n}");
    assert_eq!(indices, (0..n as u32).collect::<Vec<_>>());
    assert_eq!(req.recipients[n - 1], addr(n - 1), "kept in order");
    assert!(req.encode().len() <= tern_ipc::MAX_FRAME);
    assert_eq!(RemoteDeliver::decode(&req.encode()).unwrap(), req);
    // a request that fits is left alone
    let before = req.clone();
    fit_frame(&mut req, &mut indices);
    assert_eq!(req, before);
}

#[test]
fn message_files_are_regular_files_opened_without_blocking() {
    let dir = std::env::temp_dir().join(format!("tern-send-open-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("fifo");
    let _ = std::fs::remove_file(&fifo);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    // would block for ever without O_NONBLOCK; refused as not a file
    assert!(open_message_file(&fifo).is_err());
    let file = dir.join("msg");
    std::fs::write(&file, b"12345").unwrap();
    assert_eq!(open_message_file(&file).unwrap().1, 5);
    let link = dir.join("link");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&file, &link).unwrap();
    assert!(open_message_file(&link).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}
