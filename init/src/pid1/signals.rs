//! The signals PID1 handles, as one stream for the event loop.

use std::future::poll_fn;
use std::task::Poll;

use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::info;

/// SIGCHLD and the power signals ([`crate::power::action_for_signal`]).
pub(super) struct Signals {
    streams: Vec<(i32, Signal)>,
    /// Every handler was installed; otherwise the loop reaps more often.
    pub complete: bool,
}

impl Signals {
    /// SIGCHLD first: it must be handled before any child exists, or an
    /// early exit would go unnoticed until the backstop reap.
    pub fn install() -> Signals {
        let mut streams = Vec::new();
        let mut complete = true;
        for sig in [libc::SIGCHLD, libc::SIGTERM, libc::SIGINT, libc::SIGUSR1, libc::SIGUSR2, libc::SIGPWR] {
            match signal(SignalKind::from_raw(sig)) {
                Ok(s) => streams.push((sig, s)),
                Err(e) => {
                    complete = false;
                    info!("cannot handle {}: {e}", signal_name(sig));
                }
            }
        }
        Signals { streams, complete }
    }

    /// The next signal that arrived.
    pub async fn recv(&mut self) -> i32 {
        poll_fn(|cx| {
            for (sig, stream) in &mut self.streams {
                if let Poll::Ready(Some(())) = stream.poll_recv(cx) {
                    return Poll::Ready(*sig);
                }
            }
            Poll::Pending
        })
        .await
    }
}

/// For log lines: which signal asked for what.
pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGCHLD => "SIGCHLD",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT (ctrl-alt-del)",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPWR => "SIGPWR",
        _ => "signal",
    }
}
