//! Helpers shared by this crate's unit tests.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::message::{Message, memory_file};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh, empty directory (mode 0755) for one test.
pub fn scratch(name: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("tern-deliver-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create scratch dir");
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    d
}

/// A message holding exactly `bytes`, behind 100 bytes of something else
/// (as in a queue file).
pub fn message(bytes: &[u8]) -> Message {
    use std::io::{Seek, SeekFrom};
    let mut f = memory_file("test-message", false).expect("memfd");
    f.write_all(&[b'Q'; 100]).expect("write");
    f.write_all(bytes).expect("write");
    f.seek(SeekFrom::Start(100)).expect("seek");
    Message::from_current_offset(f).expect("message")
}
