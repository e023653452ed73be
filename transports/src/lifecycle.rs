//! The state every request and task of one engine shares ([`Shared`]), and a session's life in
//! it: admitted and opened in [`open`], its timers run by [`drive`], and ended in one place,
//! [`end`]: out of the registry, its place in the limits given back, the application told once.
//!
//! No request or transport ends a session itself: they close it ([`Socket::close`]), and the
//! driver notices. Nothing here awaits while holding a session's lock.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::admission::{self, Admission};
use crate::config::EngineConfig;
use crate::handshake::{handshake_packet, Handshake};
use crate::http::EngineError;
use crate::registry::Registry;
use crate::session::{CloseReason, Session, TransportKind};
use crate::sid::Sid;
use crate::socket::{Handler, Socket};
use crate::stats::EngineStats;

/// State shared by every request and task of one engine.
pub(crate) struct Shared {
    pub config: EngineConfig,
    pub registry: Registry,
    pub handler: Arc<dyn Handler>,
    pub tasks: TaskTracker,
    pub stats: Arc<EngineStats>,
    pub admission: Admission,
}

/// Creates, registers and starts a session, and tells the application. `resumable`: the
/// client asked for Engine.IO-level resume (HTTP transports only).
pub(crate) fn open(
    shared: &Arc<Shared>,
    transport: TransportKind,
    handshake: Handshake,
    resumable: bool,
) -> Result<Arc<Socket>, EngineError> {
    if shared.tasks.is_closed() {
        return Err(EngineError::Unavailable);
    }
    let sid = Sid::random_with_prefix(&shared.config.sid_prefix).map_err(|error| {
        tracing::error!(%error, "no entropy for a session id");
        EngineError::Unavailable
    })?;
    let config = &shared.config;
    let client = client_of(config, &handshake);
    // The place is given back where the session ends, in `end`.
    shared
        .admission
        .admit(client, config.max_sessions, config.max_sessions_per_ip)
        .map_err(|limit| refused(shared, limit, client))?;
    let open = handshake_packet(&shared.config, &sid, transport);
    let mut session = Session::new(
        transport,
        shared.config.session.clone(),
        open.encode(),
        Instant::now(),
    );
    if resumable {
        session.enable_resume();
    }
    let socket = Arc::new(Socket::new(
        sid,
        handshake,
        client,
        session,
        Arc::clone(&shared.stats),
    ));
    shared.stats.opened(transport);
    shared.registry.insert(Arc::clone(&socket));
    // Debug level: an enabled span takes a slot in the subscriber's registry for the session's
    // life, and the registry keeps every slot it grew to (a per-session map each); at `info`,
    // that was the memory a soak's churn left behind. Events that matter name the sid.
    let driver = drive(Arc::clone(&socket), Arc::clone(shared)).instrument(
        tracing::debug_span!("session", sid = %socket.sid(), transport = transport.name()),
    );
    shared.tasks.spawn(driver);
    // Shutdown closes the tracker, then every session in the registry: one that passed the
    // check above but was registered after that sweep is closed here instead.
    if shared.tasks.is_closed() {
        socket.close(CloseReason::ServerShutdown);
    }
    tracing::debug!(sid = %socket.sid(), transport = transport.name(), "session opened");
    shared.handler.on_open(&socket);
    Ok(socket)
}

/// The address a handshake counts against for `max_sessions_per_ip`.
pub(crate) fn client_of(config: &EngineConfig, handshake: &Handshake) -> Option<IpAddr> {
    admission::client_address(
        handshake.remote_addr.ip(),
        &handshake.headers,
        &config.trusted_proxies,
    )
}

/// A handshake refused by a session limit: counted, logged, answered 503.
pub(crate) fn refused(
    shared: &Shared,
    limit: admission::Refusal,
    client: Option<IpAddr>,
) -> EngineError {
    shared.stats.refused(limit);
    tracing::debug!(limit = limit.as_str(), client = ?client, "handshake refused");
    EngineError::Unavailable
}

/// Runs a session's timers until it closes, then ends it: out of the registry, and the
/// application told, exactly once.
pub(crate) async fn drive(socket: Arc<Socket>, shared: Arc<Shared>) {
    let reason = loop {
        let notified = socket.driver_wake().notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let (timeout, deadline, reason) = {
            let mut session = socket.lock();
            let timeout = session.handle_timeout(Instant::now());
            (timeout, session.poll_timeout(), session.close_reason())
        };
        if timeout.pinged || timeout.closed || timeout.upgrade_expired {
            socket.wake_receiver();
        }
        if let Some(reason) = reason {
            break reason;
        }
        let Some(deadline) = deadline else { continue };
        tokio::select! {
            _ = tokio::time::sleep_until(deadline.into()) => {}
            _ = &mut notified => {}
        }
    };
    // Boxed: a live session's task (one per session) holds only the loop above.
    Box::pin(end(socket, shared, reason)).await;
}

/// How long, once shutdown began, a closed polling session with frames still queued waits for
/// its client's next poll.
pub(crate) const SHUTDOWN_POLL_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Ends a closed session: tells the application, lets a force-closed HTTP session linger for
/// its final read, and frees its place.
async fn end(socket: Arc<Socket>, shared: Arc<Shared>, reason: CloseReason) {
    shared.stats.closed(socket.transport(), reason);
    tracing::debug!(sid = %socket.sid(), reason = reason.as_str(), "session closed");
    shared.handler.on_close(&socket, reason);
    // A force-closed HTTP session stays reachable until a poll has read its close packet, or
    // a heartbeat period has passed (the client is gone). Once shutdown begins (whenever the
    // session closed), only frames still queued are worth waiting for, and briefly: a live
    // polling client is back within a round trip (it polls again as soon as a poll returns),
    // and one that has not come back within `SHUTDOWN_POLL_WAIT` is taken for gone, so that
    // the process need not wait out the grace period for clients that left without saying so.
    let linger = shared.config.session.ping_interval + shared.config.session.ping_timeout;
    let mut deadline = tokio::time::Instant::now() + linger.min(std::time::Duration::from_secs(30));
    loop {
        let notified = socket.driver_wake().notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        {
            let session = socket.lock();
            if !session.awaits_final_read() {
                break;
            }
            if shared.tasks.is_closed() {
                if !session.has_outbound() {
                    break;
                }
                deadline = deadline.min(tokio::time::Instant::now() + SHUTDOWN_POLL_WAIT);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            _ = &mut notified => {}
        }
    }
    // Its place first: once the registry no longer shows it, a new session may take it.
    shared.admission.release(socket.client());
    shared.registry.remove(socket.sid());
}
