//! Signal set-up for small programs: a known mask, known dispositions, and
//! crash signals turned into exit codes.
#![allow(unsafe_code)]
// Safety argument for this module: `sigaction` is called with handlers that
// only call `_exit`, which is async-signal-safe; `sigprocmask` takes a fully
// initialised set.

use nix::sys::signal::{
    SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal, sigaction, sigprocmask,
};
use std::sync::atomic::{AtomicI32, Ordering};

static CRASH_EXIT: AtomicI32 = AtomicI32::new(111);
static ABORT_EXIT: AtomicI32 = AtomicI32::new(111);

extern "C" fn crash_handler(_: libc::c_int) {
    let code = CRASH_EXIT.load(Ordering::Relaxed);
    // SAFETY: _exit is async-signal-safe and never returns.
    unsafe { libc::_exit(code) }
}

extern "C" fn abort_handler(_: libc::c_int) {
    let code = ABORT_EXIT.load(Ordering::Relaxed);
    // SAFETY: _exit is async-signal-safe and never returns.
    unsafe { libc::_exit(code) }
}

/// `sigprocmask(SIG_SETMASK, {})` and `SIGPIPE` ignored: a program starts
/// from a known state whatever its caller left (qmail's `sig_blocknone`).
/// With `SIGPIPE` ignored a closed pipe is an `EPIPE` error, not a death.
pub fn reset() {
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    // SAFETY: installing SIG_IGN involves no handler code.
    let _ = unsafe { sigaction(Signal::SIGPIPE, &ignore) };
    let dfl = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for s in [
        Signal::SIGALRM,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        // SAFETY: installing SIG_DFL involves no handler code.
        let _ = unsafe { sigaction(s, &dfl) };
    }
}

/// Makes `SIGSEGV`, `SIGBUS`, `SIGILL` and `SIGFPE` end the process with
/// `crash_code` (a program's "internal bug" exit), and `SIGABRT` (which the
/// Rust runtime raises when an allocation fails) with `abort_code`, so the
/// parent always sees a documented exit status instead of a bare signal.
pub fn exit_on_crash(crash_code: i32, abort_code: i32) {
    CRASH_EXIT.store(crash_code, Ordering::Relaxed);
    ABORT_EXIT.store(abort_code, Ordering::Relaxed);
    let crash = SigAction::new(
        SigHandler::Handler(crash_handler),
        SaFlags::SA_ONSTACK,
        SigSet::all(),
    );
    for s in [
        Signal::SIGSEGV,
        Signal::SIGBUS,
        Signal::SIGILL,
        Signal::SIGFPE,
    ] {
        // SAFETY: the handler only calls _exit, which is async-signal-safe.
        let _ = unsafe { sigaction(s, &crash) };
    }
    let abort = SigAction::new(
        SigHandler::Handler(abort_handler),
        SaFlags::empty(),
        SigSet::all(),
    );
    // SAFETY: the handler only calls _exit, which is async-signal-safe.
    let _ = unsafe { sigaction(Signal::SIGABRT, &abort) };
}

/// `_exit(code)`: ends the process at once, without running destructors or
/// flushing stdio (for a watchdog thread whose program must stop now).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit has no preconditions and never returns.
    unsafe { libc::_exit(code) }
}
