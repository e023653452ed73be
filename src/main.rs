//! The `halley` binary: configuration → logging → namespaces, bridges → serve until
//! SIGINT/SIGTERM.

use std::sync::Arc;

use halley::admin::{self, AdminGuard};
use halley::bridge::{amqp, auth, health, subscribe};
use halley::config::Config;
use halley::server;

/// mimalloc, trimmed on a schedule, returns the memory of departed clients to the OS (glibc's
/// malloc keeps it); see `halley::memory`.
#[global_allocator]
static ALLOCATOR: halley::memory::Allocator = halley::memory::Allocator;

const INDEX_HTML: &str = include_str!("index.html");

fn main() {
    // Configuration first, while this is the only thread: the config file is applied through
    // environment variables.
    let config = match Config::load(std::env::args_os().collect()) {
        Ok(config) => config,
        Err(error) => match error.kind() {
            clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                error.exit()
            }
            _ => {
                let text = error.to_string();
                let line = text.lines().next().unwrap_or("invalid configuration");
                eprintln!("halley: {}", line.trim_start_matches("error: "));
                std::process::exit(2);
            }
        },
    };
    let trim = std::time::Duration::from_millis(config.memory_trim_interval);
    if let Err(error) = halley::memory::init(trim) {
        eprintln!("halley: cannot start the memory trimmer: {error}");
        std::process::exit(1);
    }
    let runtime = match halley::memory::runtime() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("halley: cannot start the runtime: {error}");
            std::process::exit(1);
        }
    };
    runtime.block_on(run(config));
}

async fn run(config: Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HALLEY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if config.log_json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let listener = match server::bind(config.listen) {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("halley: cannot listen on {}: {error}", config.listen);
            std::process::exit(1);
        }
    };
    if let Err(message) = config.check_amqp_url() {
        eprintln!("halley: {message}");
        std::process::exit(2);
    }
    let admin_token = match config.admin() {
        Ok(token) => token,
        Err(message) => {
            eprintln!("halley: {message}");
            std::process::exit(2);
        }
    };
    let admin_listener = match server::bind(config.admin_listen) {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!(
                "halley: cannot listen on {} (--admin-listen): {error}",
                config.admin_listen
            );
            std::process::exit(1);
        }
    };
    let cluster = match listener.local_addr().map(|addr| config.cluster(addr)) {
        Ok(Ok(cluster)) => cluster,
        Ok(Err(message)) => {
            eprintln!("halley: {message}");
            std::process::exit(2);
        }
        Err(error) => {
            eprintln!("halley: {error}");
            std::process::exit(1);
        }
    };
    let mut builder = config.builder();
    if let Some(cluster) = &cluster {
        builder = builder.node_name(&cluster.node);
    }
    let io = builder.build();
    // Before the AMQP bridge: its work-queue messages go through the cluster (and, with
    // recovery on, the shared log, installed before any socket connects).
    let shared_log = cluster
        .as_ref()
        .and_then(|cluster| config.shared_log(cluster))
        .map(|log| halley::bridge::log::LogLink::spawn(&io, log));
    let node_name = cluster.as_ref().map(|cluster| cluster.node.clone());
    let cluster = cluster.map(|cluster| halley::bridge::cluster::Cluster::spawn(&io, cluster));
    let policy = subscribe::SubscribePolicy {
        patterns: config.subscribe_patterns.clone(),
    };
    for path in std::iter::once("/").chain(config.namespaces.iter().map(String::as_str)) {
        let ns = io.ns(path, |socket| {
            tracing::debug!(id = socket.id(), ns = socket.ns(), "connected");
        });
        subscribe::install(&ns, policy.clone());
    }
    if config.demo {
        halley::demo::install(&io);
    }
    let auth_stats = config.auth().map(|auth| auth::install(&io, auth));
    // After every application namespace, so that a clash is seen.
    let admin_ui = match config.admin_ui(node_name.as_deref()) {
        Err(message) => {
            eprintln!("halley: {message}");
            std::process::exit(2);
        }
        Ok(None) => None,
        Ok(Some(ui_config)) => {
            if ui_config.credentials.is_none() && !ui_config.open {
                tracing::warn!(
                    "--admin-ui without --admin-ui-auth (or --admin-ui-no-auth): every login is refused"
                );
            }
            match halley::admin_ui::install(&io, ui_config) {
                Ok(ui) => Some(ui),
                Err(error) => {
                    eprintln!("halley: {error}");
                    std::process::exit(2);
                }
            }
        }
    };
    let latency = Arc::new(halley::bridge::latency::Latency::default());
    let amqp = config
        .amqp()
        .map(|amqp| amqp::spawn(io.clone(), amqp, Arc::clone(&latency)));
    let guard = Arc::new(AdminGuard::new(admin_token));
    let mut metrics = halley::metrics::Metrics::with_cluster(
        io.engine().clone(),
        amqp.clone(),
        Arc::clone(&latency),
        cluster.clone(),
    )
    .with_admin(Arc::clone(&guard))
    .with_socketio(Arc::clone(io.stats()));
    if let Some(stats) = auth_stats {
        metrics = metrics.with_auth(stats);
    }
    if let Some(log) = &shared_log {
        metrics = metrics.with_log(Arc::clone(log));
    }
    if let Some(ui) = admin_ui {
        metrics = metrics.with_admin_ui(ui);
    }
    let metrics = Arc::new(metrics);
    let admin_router = admin::router(admin::AdminState {
        io: io.clone(),
        guard,
        latency,
        amqp: amqp.clone(),
        cluster: cluster.clone(),
        log: shared_log.clone(),
        metrics,
    });
    let router = {
        let (io_ready, amqp_ready) = (io.clone(), amqp.clone());
        let index = if config.demo {
            halley::demo::PAGE
        } else {
            INDEX_HTML
        };
        // Load balancers see the status only: node names, counters and errors are admin data.
        io.router()
            .page("/", "text/html; charset=utf-8", index)
            .endpoint("/healthz", |_, _| {
                std::future::ready(admin::public_healthz())
            })
            .endpoint("/readyz", move |_, _| {
                std::future::ready(health::readyz_with_log(
                    &io_ready,
                    amqp_ready.as_deref(),
                    cluster.as_deref(),
                    shared_log.as_deref(),
                    false,
                ))
            })
    };
    if let Ok(addr) = admin_listener.local_addr() {
        tracing::info!("admin listening on http://{addr}");
        // Printed before the public line, which scripts and tests wait for.
        println!("admin listening on http://{addr}");
    }
    if let Ok(addr) = listener.local_addr() {
        tracing::info!("halley listening on http://{addr}");
        // A plain line on stdout for scripts and tests (`--listen 127.0.0.1:0` picks a port).
        println!("listening on http://{addr}");
    }
    // One signal stops both listeners, after the AMQP consumers: no delivery is handled once
    // sessions start closing, so every message is either queued for its connected targets
    // (which get it before their close) or still in RabbitMQ.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        server::shutdown_signal().await;
        if let Some(amqp) = amqp {
            amqp.stop_consuming(std::time::Duration::from_secs(5)).await;
        }
        let _ = stop.send(true);
    });
    let until_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stopped| *stopped).await;
    };
    tokio::join!(
        server::serve(
            listener,
            router,
            config.server(),
            until_stopped(stopped.clone())
        ),
        server::serve(
            admin_listener,
            admin_router,
            config.server(),
            until_stopped(stopped)
        ),
    );
}
