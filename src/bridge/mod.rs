//! Bridges between backends and browsers: RabbitMQ (AMQP 0-9-1) and an HTTP publish API.
//!
//! # Layout
//! - [`mapping`]: a backend message (content type, routing headers, body) → an emit, pure.
//! - [`amqp`]: the RabbitMQ bridge (the only file that sees AMQP types): consume queues and
//!   exchange bindings, publish unhandled client events, answer client acks from replies,
//!   reconnect with backoff.
//! - [`publish`]: `POST /publish` with a bearer token, and `/healthz`, `/readyz`.
//! - [`auth`]: the auth hook: the handshake's Cookie and auth payload, asked of an application
//!   URL before a socket connects.
//! - [`subscribe`]: the `subscribe` / `unsubscribe` convention for browsers in no-code mode.
//!
//! Both inbound paths end in [`deliver`], which queues the emit into every local target outbox
//! before it returns: an AMQP message is acked only after that.

pub mod amqp;
pub mod auth;
pub mod mapping;
pub mod publish;
pub mod subscribe;

use crate::socketio::{EmitError, Halley};
use mapping::Emit;

/// Why an emit could not be delivered.
#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    #[error("namespace {0:?} is not served")]
    UnknownNamespace(String),
    #[error(transparent)]
    Emit(#[from] EmitError),
}

/// Queues `emit` into the outbox of every socket it targets; returns how many.
pub fn deliver(io: &Halley, emit: Emit) -> Result<usize, DeliverError> {
    let ns = io
        .of(&emit.namespace)
        .ok_or_else(|| DeliverError::UnknownNamespace(emit.namespace.clone()))?;
    let mut op = ns.broadcast();
    for room in emit.rooms {
        op = op.to(room);
    }
    Ok(op.emit_args(&emit.event, emit.args, emit.binary)?)
}
