//! The control socket: `ternctl`'s queue operations reach the running
//! manager here (`queue/state/control`, mode 0600, in the manager's own
//! directory). A connection is served only for root or the manager's own
//! uid (`SO_PEERCRED`); it carries one request frame, and gets its answer
//! after the request's journal records are durable (`ops::execute`).
//! Requests are executed between two rounds of the event loop, never in
//! the middle of a pick-up, a dispatch or a removal.

use crate::Manager;
use crate::common::*;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;
use tern_ipc::control::{ControlReply, ControlRequest};
use tern_log::Event;

/// How long one client may take to send its request or read the answer
/// (only root and the manager's uid can connect at all).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

impl Manager {
    /// Creates the control socket (replacing a stale one). On failure the
    /// manager runs without it and says so: `ternctl` then reports that
    /// the running manager cannot be reached.
    pub(crate) fn listen_control(&mut self) {
        let path = crate::ops::state_path(self.queue.dir(), crate::ops::SOCKET);
        let _ = std::fs::remove_file(&path);
        let bound = UnixListener::bind(&path).and_then(|l| {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
            l.set_nonblocking(true)?;
            Ok(l)
        });
        match bound {
            Ok(l) => self.control = Some(l),
            Err(e) => Event::new(PROG, "warning")
                .field(
                    "reason",
                    format!(
                        "cannot listen on {}: {e}; queue operations (ternctl delete, hold, ...) wait until tern-send stops",
                        path.display()
                    ),
                )
                .emit(),
        }
    }

    /// Removes the control socket (at exit).
    pub(crate) fn close_control(&mut self) {
        if self.control.take().is_some() {
            let _ =
                std::fs::remove_file(crate::ops::state_path(self.queue.dir(), crate::ops::SOCKET));
        }
    }

    /// Serves every connection waiting on the control socket. Err: the
    /// journal could not be written (the manager stops, as for any journal
    /// failure).
    pub(crate) fn serve_control(&mut self) -> Result<(), Exit> {
        loop {
            let Some(listener) = self.control.as_ref() else {
                return Ok(());
            };
            let stream = match listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    Event::new(PROG, "warning")
                        .field("reason", format!("control socket: {e}"))
                        .emit();
                    return Ok(());
                }
            };
            self.serve_one(stream)?;
        }
    }

    fn serve_one(&mut self, mut stream: UnixStream) -> Result<(), Exit> {
        let me = rustix::process::geteuid().as_raw();
        let uid = match rustix::net::sockopt::socket_peercred(&stream) {
            Ok(c) => c.uid.as_raw(),
            Err(e) => {
                Event::new(PROG, "warning")
                    .field(
                        "reason",
                        format!("control socket: no peer credentials: {e}"),
                    )
                    .emit();
                return Ok(());
            }
        };
        if uid != 0 && uid != me {
            Event::new(PROG, "warning")
                .num("uid", uid)
                .field("reason", "control request refused: only root and the queue manager's uid may operate on the queue")
                .emit();
            return Ok(());
        }
        let setup = stream
            .set_nonblocking(false)
            .and_then(|()| stream.set_read_timeout(Some(CLIENT_TIMEOUT)))
            .and_then(|()| stream.set_write_timeout(Some(CLIENT_TIMEOUT)));
        if setup.is_err() {
            return Ok(());
        }
        let req = match tern_ipc::read_frame(&mut stream).and_then(|p| ControlRequest::decode(&p)) {
            Ok(r) => r,
            Err(e) => {
                Event::new(PROG, "warning")
                    .num("uid", uid)
                    .field("reason", format!("bad control request: {e}"))
                    .emit();
                return Ok(());
            }
        };
        let done = crate::ops::execute(
            &mut self.journal,
            &mut self.state,
            &self.queue,
            &self.cfg.rewriter,
            &req,
            PROG,
        )
        .map_err(fatal)?;
        self.metrics
            .operation(req.op.name(), done.changed.len() as u64);
        for &id in &done.picked_up {
            self.not_taken.insert(id);
        }
        for &id in done.changed.iter().chain(&done.picked_up) {
            self.schedule_message(id);
        }
        // The answer says "done" only of what is durable; the effects
        // (removal, bounce, no new attempts) follow from the state.
        let reply = ControlReply {
            results: done.results,
        };
        if let Err(e) = tern_ipc::write_frame(&mut stream, &reply.encode()) {
            Event::new(PROG, "warning")
                .field("reason", format!("control answer not delivered: {e}"))
                .emit();
        }
        self.take_over(done.picked_up)
    }
}
