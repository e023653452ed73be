//! The `halley` binary: configuration → logging → namespaces, bridges → serve until
//! SIGINT/SIGTERM.

use std::sync::Arc;

use halley::bridge::{amqp, auth, publish, subscribe};
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
    // Before the AMQP bridge: its work-queue messages go through the cluster.
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
    if let Some(auth) = config.auth() {
        auth::install(&io, auth);
    }
    let latency = Arc::new(halley::bridge::Latency::default());
    let amqp = config
        .amqp()
        .map(|amqp| amqp::spawn(io.clone(), amqp, Arc::clone(&latency)));
    let publish = Arc::new(publish::PublishConfig {
        token: config.publish_token.clone(),
    });
    let metrics = Arc::new(halley::metrics::Metrics::with_cluster(
        io.engine().clone(),
        amqp.clone(),
        Arc::clone(&latency),
        cluster.clone(),
    ));
    let router = {
        let (io_p, io_h, io_s) = (io.clone(), io.clone(), io.clone());
        let publish_s = Arc::clone(&publish);
        let cluster_h = cluster.clone();
        let (amqp_h, amqp_r) = (amqp.clone(), amqp.clone());
        let index = if config.demo {
            halley::demo::PAGE
        } else {
            INDEX_HTML
        };
        io.router()
            .page("/", "text/html; charset=utf-8", index)
            .endpoint("/publish", move |req, remote| {
                publish::handle(
                    io_p.clone(),
                    Arc::clone(&publish),
                    Arc::clone(&latency),
                    req,
                    remote,
                )
            })
            .endpoint("/sockets", move |req, remote| {
                publish::sockets(io_s.clone(), Arc::clone(&publish_s), req, remote)
            })
            .endpoint("/healthz", move |_, _| {
                std::future::ready(publish::healthz(
                    &io_h,
                    amqp_h.as_deref(),
                    cluster_h.as_deref(),
                ))
            })
            .endpoint("/readyz", move |_, _| {
                std::future::ready(publish::readyz(amqp_r.as_deref()))
            })
            .endpoint("/metrics", move |_, _| {
                std::future::ready(metrics.response())
            })
    };
    if let Ok(addr) = listener.local_addr() {
        tracing::info!("halley listening on http://{addr}");
        // A plain line on stdout for scripts and tests (`--listen 127.0.0.1:0` picks a port).
        println!("listening on http://{addr}");
    }
    server::serve(listener, router, config.server(), server::shutdown_signal()).await;
}
