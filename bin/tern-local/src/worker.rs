//! `tern-local --worker`: one of tern-lspawn's delivery workers, running as
//! one recipient uid and serving that uid's deliveries one after another
//! (tern-ipc's `lworker` protocol on fd 0). Nothing of one delivery
//! survives into the next: each reads its control files and `.qmail`
//! files afresh, and programs run as their own processes with their own
//! environment, as under a one-delivery tern-local. The worker never
//! changes its directory, umask or environment.

use std::ffi::OsString;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStringExt;
use std::process::ExitCode;

use tern_ipc::handoff::{self, HandoffError};
use tern_ipc::lworker::{Finished, Job};

fn fail(reason: &str) -> ExitCode {
    // stderr is /dev/null under tern-lspawn; the exit status tells it.
    let _ = reason;
    ExitCode::from(111)
}

/// Serves deliveries until tern-lspawn closes the socket.
pub(crate) fn run() -> ExitCode {
    let stdin = std::io::stdin();
    let Ok(ctl) = rustix::io::fcntl_dupfd_cloexec(stdin.as_fd(), 3) else {
        return fail("fd 0");
    };
    // fd 0 no longer names the socket: nothing this worker runs inherits
    // it (programs get the message as their fd 0).
    if let Ok(null) = rustix::fs::open(
        "/dev/null",
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    ) {
        let _ = rustix::stdio::dup2_stdin(&null);
    }
    loop {
        let (packet, mut fds) = match handoff::recv(ctl.as_fd()) {
            Ok(p) => p,
            Err(HandoffError::Closed) => return ExitCode::SUCCESS,
            Err(_) => return fail("socket"),
        };
        if fds.len() != 1 {
            return fail("a job without exactly one message");
        }
        let Ok(job) = Job::decode(&packet) else {
            return fail("bad job");
        };
        let mut args: Vec<OsString> = Vec::with_capacity(job.args.len() + 1);
        args.push("--".into());
        args.extend(job.args.into_iter().map(OsString::from_vec));
        let result = crate::run(&args, fds.remove(0));
        let text = match &result {
            Ok(o) => o.report(),
            Err(e) => e.to_string(),
        };
        let done = Finished {
            code: tern_deliver::exit_code(&result) as u8,
            text: text.into_bytes(),
        };
        if handoff::send(ctl.as_fd(), &done.encode(), None).is_err() {
            return fail("cannot answer");
        }
    }
}
