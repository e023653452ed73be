//! Prometheus metrics at `/metrics`, rendered by `prometheus-client` at scrape time from the
//! engine's atomic counters and the AMQP bridge's stats: nothing is recorded twice, and the hot
//! paths only touch atomics.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::engine::origin;
use crate::engine::stats::{CLOSE_REASONS, FALLBACK_REASONS, HTTP_REFUSALS, RTT_BUCKETS_MS};
use crate::engine::{full, Body, Engine, Refusal, TransportKind};
use hyper::header::{self, HeaderValue};
use hyper::Response;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::bridge::amqp::BridgeStats;
use crate::bridge::auth::{AuthStats, Outcome};
use crate::bridge::cluster::Cluster;
use crate::bridge::latency::{Latency, Source};
use crate::bridge::log::LogLink;

/// Everything `/metrics` shows.
pub struct Metrics {
    registry: Registry,
}

#[derive(Debug)]
struct Collect {
    engine: Engine,
    amqp: Option<Arc<BridgeStats>>,
    latency: Arc<Latency>,
    cluster: Option<Arc<Cluster>>,
}

fn counter(m: &mut prometheus_client::encoding::MetricEncoder<'_>, v: u64) -> fmt::Result {
    m.encode_counter::<NoLabelSet, _, u64>(&v, None)
}

/// A counter family split by one label: `name_total{label="..."}` for each `(value, count)`.
pub(crate) fn labelled<'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    counts: impl IntoIterator<Item = (&'a str, u64)>,
) -> fmt::Result {
    let mut m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, count) in counts {
        counter(&mut m.encode_family(&[(label, value)])?, count)?;
    }
    Ok(())
}

impl Collect {
    fn per_transport(
        &self,
        encoder: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        value: impl Fn(&crate::engine::stats::TransportStats) -> u64,
    ) -> fmt::Result {
        let mut m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        for t in TransportKind::ALL {
            let labels = [("transport", t.name())];
            counter(
                &mut m.encode_family(&labels)?,
                value(self.engine.stats().transport(t)),
            )?;
        }
        Ok(())
    }
}

impl Collector for Collect {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let stats = self.engine.stats();
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        {
            let mut m = encoder.encode_descriptor(
                "halley_sessions",
                "Engine.IO sessions open now, by transport",
                None,
                MetricType::Gauge,
            )?;
            for t in TransportKind::ALL {
                let open = stats.transport(t).sessions.load(Ordering::Relaxed);
                m.encode_family(&[("transport", t.name())])?
                    .encode_gauge(&open)?;
            }
        }
        self.per_transport(
            &mut encoder,
            "halley_handshakes",
            "Sessions opened, by transport",
            |s| load(&s.handshakes),
        )?;
        {
            let mut m = encoder.encode_descriptor(
                "halley_upgrades",
                "Sessions upgraded, by transport before and after",
                None,
                MetricType::Counter,
            )?;
            for t in TransportKind::ALL
                .into_iter()
                .filter(|&t| t != TransportKind::WebSocket)
            {
                let labels = [("from", t.name()), ("to", "websocket")];
                counter(
                    &mut m.encode_family(&labels)?,
                    load(&stats.transport(t).upgrades),
                )?;
            }
        }
        self.per_transport(
            &mut encoder,
            "halley_packets_in",
            "Engine.IO packets received",
            |s| load(&s.packets_in),
        )?;
        self.per_transport(
            &mut encoder,
            "halley_bytes_in",
            "Bytes of packets received",
            |s| load(&s.bytes_in),
        )?;
        self.per_transport(
            &mut encoder,
            "halley_packets_out",
            "Engine.IO packets sent",
            |s| load(&s.packets_out),
        )?;
        self.per_transport(
            &mut encoder,
            "halley_bytes_out",
            "Bytes sent, framing included",
            |s| load(&s.bytes_out),
        )?;
        {
            let mut m = encoder.encode_descriptor(
                "halley_client_fallbacks",
                "Transports clients gave up before connecting, as they report them, by reason",
                None,
                MetricType::Counter,
            )?;
            for t in TransportKind::ALL {
                for reason in FALLBACK_REASONS {
                    let labels = [("transport", t.name()), ("reason", reason)];
                    counter(&mut m.encode_family(&labels)?, stats.fallbacks(t, reason))?;
                }
            }
        }
        {
            let mut m = encoder.encode_descriptor(
                "halley_outbox_dropped",
                "Volatile packets dropped because a client's outbox was full",
                None,
                MetricType::Counter,
            )?;
            counter(&mut m, load(&stats.outbox_dropped))?;
        }
        labelled(
            &mut encoder,
            "halley_handshakes_refused",
            "Handshakes refused with 503 by a session limit (max_sessions, max_sessions_per_ip)",
            "limit",
            Refusal::ALL.map(|limit| (limit.as_str(), stats.refusals(limit))),
        )?;
        labelled(
            &mut encoder,
            "halley_http_refused",
            "Request heads refused by the HTTP/1.1 layer, by reason (malformed, framing: 400; too_large: 431; version: 505; timeout: begun and not finished within the header read timeout, closed unanswered)",
            "reason",
            HTTP_REFUSALS.map(|reason| (reason, stats.http_refusals(reason))),
        )?;
        labelled(
            &mut encoder,
            "halley_origin_refused",
            "Requests refused with 403 by the origin policy, by kind (websocket handshake, script-like GET, POST)",
            "kind",
            origin::Kind::ALL.map(|kind| (kind.as_str(), stats.origin_refusals(kind))),
        )?;
        for (name, help, value) in [
            (
                "halley_write_timeouts",
                "HTTP connections closed because the client stopped reading (write timeout)",
                load(&stats.write_timeouts),
            ),
            (
                "halley_body_timeouts",
                "POSTs answered 408 because their body stopped arriving (body read timeout)",
                load(&stats.body_timeouts),
            ),
            (
                "halley_forward_connections",
                "TCP connections opened to other nodes to forward requests (pooled, kept alive)",
                load(&stats.forward_connections),
            ),
        ] {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            counter(&mut m, value)?;
        }
        labelled(
            &mut encoder,
            "halley_session_closes",
            "Sessions closed, by reason (outbox full = disconnected for not reading)",
            "reason",
            CLOSE_REASONS.map(|reason| (reason.as_str(), stats.closes(reason))),
        )?;
        {
            let mut m = encoder.encode_descriptor(
                "halley_ping_rtt_seconds",
                "Ping to pong round trip, by transport",
                None,
                MetricType::Histogram,
            )?;
            for t in TransportKind::ALL {
                let s = stats.transport(t);
                // Per-bucket counts, not cumulative ones: the encoder accumulates them itself.
                let mut buckets = Vec::with_capacity(RTT_BUCKETS_MS.len() + 1);
                for (i, le) in RTT_BUCKETS_MS.iter().enumerate() {
                    buckets.push((*le as f64 / 1000.0, load(&s.rtt_buckets[i])));
                }
                buckets.push((f64::INFINITY, load(&s.rtt_buckets[RTT_BUCKETS_MS.len()])));
                let count = buckets.iter().map(|&(_, n)| n).sum();
                let sum = load(&s.rtt_sum_micros) as f64 / 1e6;
                m.encode_family(&[("transport", t.name())])?
                    .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
            }
        }
        {
            let mut m = encoder.encode_descriptor(
                "halley_publish_latency_seconds",
                "From a backend message's publish time (x-published-at, timestamp, publishedAt) to its delivery into every target outbox",
                None,
                MetricType::Histogram,
            )?;
            for source in Source::ALL {
                let (buckets, count, sum) = self.latency.histogram(source);
                m.encode_family(&[("source", source.name())])?
                    .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
            }
        }
        if let Some(amqp) = &self.amqp {
            let snap = amqp.snapshot();
            {
                let mut m = encoder.encode_descriptor(
                    "halley_amqp_connected",
                    "1 while the RabbitMQ bridge is connected",
                    None,
                    MetricType::Gauge,
                )?;
                m.encode_gauge(&i64::from(snap.connected))?;
            }
            {
                let mut m = encoder.encode_descriptor(
                    "halley_amqp_outbound_bytes",
                    "Bytes of client events waiting to be published (bounded by --amqp-outbound-max-bytes)",
                    None,
                    MetricType::Gauge,
                )?;
                m.encode_gauge(&i64::try_from(snap.outbound_bytes).unwrap_or(i64::MAX))?;
            }
            labelled(
                &mut encoder,
                "halley_amqp_publish_refused",
                "Client events refused before they were queued for RabbitMQ, by reason (event_name: over 255 bytes; backlog_full, backlog_bytes: the outbound queue's count or byte bound; headers: too large for one AMQP frame)",
                "reason",
                amqp.refused(),
            )?;
            for (name, help, value) in [
                (
                    "halley_amqp_consumed",
                    "Messages consumed from RabbitMQ",
                    snap.consumed,
                ),
                (
                    "halley_amqp_acked",
                    "Messages acked after delivery to every target outbox",
                    snap.acked,
                ),
                (
                    "halley_amqp_rejected",
                    "Malformed or undeliverable messages rejected without requeue",
                    snap.rejected,
                ),
                (
                    "halley_amqp_duplicates",
                    "Messages acked and dropped because their message_id was delivered already (a redelivery)",
                    snap.duplicates,
                ),
                (
                    "halley_amqp_published",
                    "Client events published to RabbitMQ",
                    snap.published,
                ),
                (
                    "halley_amqp_publish_dropped",
                    "Queued client events the broker did not take (nacked, or the connection lost first)",
                    snap.publish_dropped,
                ),
                (
                    "halley_amqp_connects",
                    "Connections made to RabbitMQ",
                    snap.connects,
                ),
                (
                    "halley_amqp_restarts",
                    "Times the bridge's task ended or panicked and was restarted",
                    snap.restarts,
                ),
            ] {
                let mut m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
                counter(&mut m, value)?;
            }
        }
        if let Some(cluster) = &self.cluster {
            let stats = cluster.stats();
            for (name, help, value) in [
                (
                    "halley_cluster_connected",
                    "1 while the cluster link to RabbitMQ is up",
                    i64::from(stats.connected.load(Ordering::Acquire)),
                ),
                (
                    "halley_cluster_members",
                    "Other nodes heard from within three heartbeats",
                    cluster.members().len() as i64,
                ),
            ] {
                let mut m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
                m.encode_gauge(&value)?;
            }
            for (name, help, value) in [
                (
                    "halley_cluster_published",
                    "Cluster messages the broker confirmed",
                    load(&stats.published),
                ),
                (
                    "halley_cluster_received",
                    "Cluster messages received (own included)",
                    load(&stats.received),
                ),
                (
                    "halley_cluster_dropped",
                    "Cluster messages dropped: outbox full or refused by the broker",
                    load(&stats.dropped),
                ),
                (
                    "halley_cluster_malformed",
                    "Cluster messages that could not be read",
                    load(&stats.malformed),
                ),
                (
                    "halley_cluster_restarts",
                    "Times the cluster link's task ended or panicked and was restarted",
                    load(&stats.restarts),
                ),
            ] {
                let mut m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
                counter(&mut m, value)?;
            }
        }
        // Present without a cluster too: a request claiming to be forwarded is refused there.
        labelled(
            &mut encoder,
            "halley_cluster_rejected",
            "Cluster messages and forwarded requests refused, by reason (see the README)",
            "reason",
            self.cluster
                .iter()
                .flat_map(|cluster| cluster.stats().rejected())
                .chain([("forward_mark", load(&stats.forward_refused))]),
        )
    }
}

/// The Socket.IO layer's limits: refused joins and CONNECTs.
#[derive(Debug)]
struct SocketIoCollect(Arc<crate::socketio::limits::Stats>);

impl Collector for SocketIoCollect {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        use crate::socketio::limits::{ConnectRefusal, JoinRefusal};
        labelled(
            &mut encoder,
            "halley_room_joins_refused",
            "Room joins refused by a room limit (max_rooms, max_room_name), by reason",
            "reason",
            JoinRefusal::ALL.map(|reason| (reason.as_str(), self.0.joins_refused(reason))),
        )?;
        labelled(
            &mut encoder,
            "halley_connects_refused",
            "Socket.IO CONNECTs refused by a limit (max_namespaces, max_auth_payload, max_auth_attempts), by reason",
            "reason",
            ConnectRefusal::ALL.map(|reason| (reason.as_str(), self.0.connects_refused(reason))),
        )?;
        let mut m = encoder.encode_descriptor(
            "halley_duplicates_dropped",
            "Backend messages (AMQP, POST /publish, forwarded by another node) dropped because their id was delivered lately",
            None,
            MetricType::Counter,
        )?;
        counter(&mut m, self.0.duplicates())
    }
}

/// The cluster's shared recovery log (`--cluster` with `--recovery-window`).
#[derive(Debug)]
struct LogCollect(Arc<LogLink>);

impl Collector for LogCollect {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let snap = self.0.snapshot();
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let outbox_help = format!(
            "Records waiting to be appended to the shared log (at most {}; beyond, they are dropped)",
            snap.outbox_max
        );
        for (name, help, value) in [
            (
                "halley_log_connected",
                "1 while the shared recovery log (--cluster-stream) is connected; while 0, publishes get 503 and /readyz is 503",
                i64::from(snap.connected),
            ),
            (
                "halley_log_outbox",
                outbox_help.as_str(),
                gauge(snap.outbox as u64),
            ),
            (
                "halley_log_next_position",
                "Stream position this node reads next from the shared log: every record before it was applied or rejected (0 until one was read); a node far behind the others lags",
                gauge(snap.next_position.unwrap_or(0)),
            ),
        ] {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            m.encode_gauge(&value)?;
        }
        for (name, help, value) in [
            (
                "halley_log_appended",
                "Records this node appended to the shared log (the broker confirmed them)",
                snap.appended,
            ),
            (
                "halley_log_applied",
                "Records read from the shared log and applied (events delivered to local sockets, sessions learnt), this node's own included",
                snap.applied,
            ),
            (
                "halley_log_rejected",
                "Records on the shared log refused: not signed with the cluster's secret, altered, or malformed",
                snap.rejected,
            ),
            (
                "halley_log_dropped",
                "Records never appended to the shared log: outbox full, or the broker refused or lost them",
                snap.dropped,
            ),
            (
                "halley_log_withdrawn",
                "Records not appended because their publisher had already been refused (503, or the message requeued) before the broker took them",
                snap.withdrawn,
            ),
            (
                "halley_log_maybe_delivered",
                "Records published to the shared log whose confirm never came (the connection went first): their publisher got 504, the stream may hold them",
                snap.maybe_delivered,
            ),
            (
                "halley_log_restarts",
                "Times the shared log's task ended or panicked and was restarted",
                snap.restarts,
            ),
        ] {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            counter(&mut m, value)?;
        }
        Ok(())
    }
}

/// The auth hook: checks by outcome, and the checks under way.
#[derive(Debug)]
struct AuthCollect(Arc<AuthStats>);

impl Collector for AuthCollect {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        labelled(
            &mut encoder,
            "halley_auth_checks",
            "Auth hook checks, by outcome (allowed, refused, error, timeout, busy = no free slot in time, room_limits)",
            "outcome",
            Outcome::ALL.map(|outcome| (outcome.as_str(), self.0.checks(outcome))),
        )?;
        for (name, help, value) in [
            (
                "halley_auth_in_flight",
                "Auth hook requests under way (at most --auth-concurrency)",
                self.0.in_flight(),
            ),
            (
                "halley_auth_waiting",
                "Auth hook checks waiting for a free slot",
                self.0.waiting(),
            ),
        ] {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            m.encode_gauge(&(value as i64))?;
        }
        Ok(())
    }
}

impl Metrics {
    pub fn new(engine: Engine, amqp: Option<Arc<BridgeStats>>, latency: Arc<Latency>) -> Self {
        Self::with_cluster(engine, amqp, latency, None)
    }

    /// The metrics of a node, with its cluster link's when it has one.
    pub fn with_cluster(
        engine: Engine,
        amqp: Option<Arc<BridgeStats>>,
        latency: Arc<Latency>,
        cluster: Option<Arc<Cluster>>,
    ) -> Self {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Collect {
            engine,
            amqp,
            latency,
            cluster,
        }));
        Metrics { registry }
    }

    /// Adds the counters of a layer above this one, which this module may not import: the
    /// admin listener's refusals come through here, from `Metrics::with_admin` in `crate::admin`.
    pub(crate) fn with_collector(mut self, collector: impl Collector + 'static) -> Self {
        self.registry.register_collector(Box::new(collector));
        self
    }

    /// Adds the Socket.IO layer's limits (`halley_room_joins_refused_total{reason}`,
    /// `halley_connects_refused_total{reason}`), from [`crate::socketio::Halley::stats`].
    pub fn with_socketio(mut self, stats: Arc<crate::socketio::limits::Stats>) -> Self {
        self.registry
            .register_collector(Box::new(SocketIoCollect(stats)));
        self
    }

    /// Adds the shared recovery log's state and counters (`halley_log_*`), when it runs.
    pub fn with_log(mut self, log: Arc<LogLink>) -> Self {
        self.registry.register_collector(Box::new(LogCollect(log)));
        self
    }

    /// Adds the auth hook's counters (`halley_auth_checks_total{outcome}`,
    /// `halley_auth_in_flight`, `halley_auth_waiting`), from [`crate::bridge::auth::install`].
    pub fn with_auth(mut self, stats: Arc<AuthStats>) -> Self {
        self.registry
            .register_collector(Box::new(AuthCollect(stats)));
        self
    }

    /// The metrics in the OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The `/metrics` response.
    pub fn response(&self) -> Response<Body> {
        let mut res = Response::new(full(self.render()));
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        );
        res
    }
}
