//! `org.berth.Updater1` at `/org/berth/Updater` on
//! [`berth_layout::paths::UPDATER_SOCKET`]: the daemon's D-Bus interface,
//! peer to peer, served with [`berth_dbus`]'s rules (root only,
//! SO_PEERCRED, bounded SASL, limits on connections, calls and idle time).
//!
//! ```text
//! Status()                  -> ((sss)(sss)bsbsa(sssbst)a(sst)s)   see WireStatus
//! Install(s source, b force)-> (sst)   version, slot, bytes; one at a time
//! Rollback()                -> (sss)   the slot that boots next
//! Check(s url)              -> (bssts) "" = the configured source
//! signal Progress(s step, t done, t total)   to the caller of Install
//! errors: org.berth.Updater1.Error.{Busy,Refused,Failed}, text = the message
//! ```

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_dbus::server::Setup;
use berth_dbus::{CallLimit, PeerConfig, PeerServer};
use zbus::connection::Builder;
use zbus::object_server::SignalEmitter;

use super::service::{say, Daemon, DaemonError, Machine, Pid1};
use super::wire::{WireCandidate, WireInstalled, WireSlot, WireStatus};
use crate::install::{Progress, Step};

/// Calls one connection may have in flight.
pub const MAX_CALLS_PER_CONNECTION: usize = 8;
/// Progress signals go out at most this often (and at every new step).
pub const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// The errors of `org.berth.Updater1`; each carries the message berthctl
/// prints.
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.berth.Updater1.Error")]
pub enum UpdaterError {
    #[zbus(error)]
    ZBus(zbus::Error),
    Busy(String),
    Refused(String),
    Failed(String),
}

impl From<DaemonError> for UpdaterError {
    fn from(e: DaemonError) -> UpdaterError {
        let text = e.to_string();
        match e {
            DaemonError::Busy(_) => UpdaterError::Busy(text),
            DaemonError::Refused(_) => UpdaterError::Refused(text),
            DaemonError::Failed(_) => UpdaterError::Failed(text),
        }
    }
}

/// The interface for one connection.
pub struct UpdaterApi<M, P> {
    daemon: Arc<Daemon<M, P>>,
    calls: CallLimit,
}

impl<M: Machine, P: Pid1> UpdaterApi<M, P> {
    fn permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, UpdaterError> {
        self.calls
            .permit()
            .ok_or_else(|| UpdaterError::Refused(format!("more than {} calls in flight", self.calls.max())))
    }
}

/// Keeps progress to a few signals a second: a new step, the end of one,
/// or [`PROGRESS_EVERY`] since the last.
#[derive(Default)]
pub struct Throttle {
    last: Option<(Step, Instant)>,
}

impl Throttle {
    pub fn pass(&mut self, p: &Progress, now: Instant) -> bool {
        let send = match self.last {
            None => true,
            Some((step, at)) => step != p.step || p.done >= p.total || now.duration_since(at) >= PROGRESS_EVERY,
        };
        if send {
            self.last = Some((p.step, now));
        }
        send
    }
}

#[zbus::interface(name = "org.berth.Updater1")]
impl<M: Machine, P: Pid1> UpdaterApi<M, P> {
    async fn status(&self) -> Result<WireStatus, UpdaterError> {
        let _permit = self.permit()?;
        Ok(self.daemon.status().await?)
    }

    /// Installs the bundle at `source` (a path or an http(s) URL); progress
    /// goes to this connection as `Progress` signals.
    async fn install(
        &self,
        source: &str,
        force: bool,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<WireInstalled, UpdaterError> {
        let _permit = self.permit()?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Progress>();
        let mut throttle = Throttle::default();
        let progress = move |p: Progress| {
            if throttle.pass(&p, Instant::now()) {
                let _ = tx.send(p);
            }
        };
        let emitter = emitter.to_owned();
        let forward = async move {
            while let Some(p) = rx.recv().await {
                // A client that went away does not stop the install.
                let _ = UpdaterApi::<M, P>::progress(&emitter, p.step.name(), p.done, p.total).await;
            }
        };
        let (result, ()) = tokio::join!(self.daemon.install(source, force, progress), forward);
        let i = result?;
        Ok(WireInstalled { version: i.version, slot: i.slot.name().to_string(), bytes: i.bytes })
    }

    async fn rollback(&self) -> Result<WireSlot, UpdaterError> {
        let _permit = self.permit()?;
        Ok(self.daemon.rollback().await?)
    }

    async fn check(&self, url: &str) -> Result<WireCandidate, UpdaterError> {
        let _permit = self.permit()?;
        Ok(self.daemon.check(Some(url)).await?)
    }

    /// An install's progress: the step (install's stable names), bytes or
    /// units done and the total of the step.
    #[zbus(signal)]
    async fn progress(emitter: &SignalEmitter<'_>, step: &str, done: u64, total: u64) -> zbus::Result<()>;
}

struct ServeUpdater<M, P>(Arc<Daemon<M, P>>);

impl<M: Machine, P: Pid1> Setup for ServeUpdater<M, P> {
    fn setup<'a>(&self, builder: Builder<'a>, _uid: u32) -> zbus::Result<Builder<'a>> {
        let api = UpdaterApi { daemon: Arc::clone(&self.0), calls: CallLimit::new(MAX_CALLS_PER_CONNECTION) };
        builder.serve_at(berth_dbus::UPDATER.path, api)
    }
}

fn log_note(args: std::fmt::Arguments<'_>) {
    say(format_args!("api: {args}"));
}

/// Serves the daemon on `config.socket` (within a tokio runtime).
pub fn serve<M: Machine, P: Pid1>(daemon: Arc<Daemon<M, P>>, config: PeerConfig) -> io::Result<PeerServer> {
    PeerServer::start(config, "updater API", log_note, ServeUpdater(daemon))
}
