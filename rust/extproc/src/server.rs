//! The EPP's gRPC side in Rust: ext_proc on one port, grpc.health.v1 on another, both served by a
//! tokio runtime the server owns. Health reports NOT_SERVING until told otherwise and flips back
//! first on stop, so proxies stop opening streams before the server goes.

use std::net::TcpListener as StdListener;
use std::time::Duration;

use tokio::runtime::Runtime;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::admission::Gate;
use crate::protocol::HEALTH_SERVICES;
use crate::service::ExternalProcessorService;
use crate::stream::MAX_BODY_BYTES;
use crate::stream_metrics::{StreamMetrics, StreamMetricsSnapshot};
use crate::tls::{self, TlsPolicy};
use crate::SharedRouter;
use std::sync::Arc;

/// PEM certificate chain and private key for serving ext_proc over TLS.
pub struct TlsPem {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

#[derive(Default)]
pub struct ServerOptions {
    /// Close each stream after routing when the response needs no rewrite.
    pub skip_response: bool,
    pub tls: Option<TlsPem>,
    /// Upstream's TLS flags (reload, min version, suites); used only with `tls`.
    pub tls_policy: TlsPolicy,
    /// --enable-grpc-stream-metrics: count each ext_proc stream.
    pub stream_metrics: bool,
    /// tokio worker threads; None = one per CPU.
    pub worker_threads: Option<usize>,
    /// Request bodies above this get 413 when they cross it; None = `stream::MAX_BODY_BYTES`.
    pub max_body_bytes: Option<usize>,
    /// Flow control (or legacy shedding) in front of routing; None = route every request.
    pub gate: Option<Arc<Gate>>,
    /// Also serve grpc.health.v1 on the ext_proc port (upstream's --health-checking).
    pub health_checking: bool,
    /// gRPC message limits on the ext_proc port; None = 64 MiB.
    pub max_recv_msg_bytes: Option<usize>,
    pub max_send_msg_bytes: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: String,
        source: std::io::Error,
    },
    #[error("cannot start the ext_proc runtime: {0}")]
    Runtime(std::io::Error),
    #[error("ext_proc TLS: {0}")]
    Tls(String),
    #[error("ext_proc server {0}")]
    State(&'static str),
}

pub struct ExtProcServer {
    runtime: Option<Runtime>,
    gate: Option<Arc<Gate>>,
    service: ExternalProcessorService,
    tls: Option<Arc<rustls::ServerConfig>>,
    stream_metrics: Option<Arc<StreamMetrics>>,
    listeners: Option<(StdListener, StdListener)>,
    port: u16,
    health_port: u16,
    health: HealthReporter,
    health_routes: Option<Routes>,
    /// --health-checking: health on the ext_proc port, following the same status.
    extproc_health: Option<(HealthReporter, Option<Routes>)>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl ExtProcServer {
    /// Binds both ports now (port 0 = pick a free one), serves nothing until `start`.
    pub fn new(
        router: SharedRouter,
        host: &str,
        port: u16,
        health_port: u16,
        options: ServerOptions,
    ) -> Result<ExtProcServer, ServerError> {
        // A bad certificate, key or policy is refused here, not on the first connection.
        let tls = options
            .tls
            .map(|pem| tls::server_config(&pem.cert, &pem.key, &options.tls_policy))
            .transpose()
            .map_err(ServerError::Tls)?
            .map(Arc::new);
        let stream_metrics = options
            .stream_metrics
            .then(|| Arc::new(StreamMetrics::default()));
        let listeners = (bind(host, port)?, bind(host, health_port)?);
        let (port, health_port) = (
            local_port(&listeners.0, host)?,
            local_port(&listeners.1, host)?,
        );
        let mut runtime = tokio::runtime::Builder::new_multi_thread();
        if let Some(n) = options.worker_threads {
            runtime.worker_threads(n.max(1));
        }
        let runtime = runtime
            .thread_name("sluicegate-extproc")
            .enable_all()
            .build()
            .map_err(ServerError::Runtime)?;
        let (health, health_service) = tonic_health::server::health_reporter();
        let extproc_health = options.health_checking.then(|| {
            let (reporter, service) = tonic_health::server::health_reporter();
            (reporter, Some(Routes::new(service)))
        });
        let server = ExtProcServer {
            runtime: Some(runtime),
            gate: options.gate.clone(),
            service: ExternalProcessorService::new(router, options.skip_response)
                .with_max_body_bytes(options.max_body_bytes.unwrap_or(MAX_BODY_BYTES))
                .with_gate(options.gate)
                .with_message_limits(options.max_recv_msg_bytes, options.max_send_msg_bytes)
                .with_stream_metrics(stream_metrics.clone()),
            tls,
            stream_metrics,
            listeners: Some(listeners),
            port,
            health_port,
            health,
            health_routes: Some(Routes::new(health_service)),
            extproc_health,
            shutdown: watch::channel(false).0,
            tasks: Vec::new(),
        };
        server.set_serving(false);
        Ok(server)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn health_port(&self) -> u16 {
        self.health_port
    }

    /// The ext_proc stream counts; None when --enable-grpc-stream-metrics is off.
    pub fn stream_metrics(&self) -> Option<StreamMetricsSnapshot> {
        self.stream_metrics.as_ref().map(|m| m.snapshot())
    }

    /// Serve ext_proc and health on the runtime's threads; returns at once.
    pub fn start(&mut self) -> Result<(), ServerError> {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or(ServerError::State("is stopped"))?;
        let (Some((grpc, health)), Some(routes)) =
            (self.listeners.take(), self.health_routes.take())
        else {
            return Err(ServerError::State("is started already"));
        };
        let _entered = runtime.enter();
        let grpc = listen(grpc, &self.port.to_string())?;
        let health = listen(health, &self.health_port.to_string())?;
        let mut ext_proc_routes = Routes::new(self.service.clone());
        if let Some(health) = self.extproc_health.as_mut().and_then(|(_, r)| r.take()) {
            ext_proc_routes = health.add_service(self.service.clone());
        }
        let ext_proc = Server::builder().add_routes(ext_proc_routes);
        let stop = stopped(self.shutdown.subscribe());
        let task = match self.tls.clone() {
            Some(config) => runtime.spawn(report(
                "ext_proc",
                ext_proc.serve_with_incoming_shutdown(tls::incoming(grpc, config), stop),
            )),
            None => runtime.spawn(report(
                "ext_proc",
                ext_proc.serve_with_incoming_shutdown(plain(grpc), stop),
            )),
        };
        self.tasks.push(task);
        let health = Server::builder()
            .add_routes(routes)
            .serve_with_incoming_shutdown(plain(health), stopped(self.shutdown.subscribe()));
        self.tasks.push(runtime.spawn(report("health", health)));
        Ok(())
    }

    /// SERVING or NOT_SERVING for "", liveness, readiness and the ext_proc service name.
    pub fn set_serving(&self, serving: bool) {
        let Some(runtime) = &self.runtime else { return };
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        let reporters = std::iter::once(self.health.clone())
            .chain(self.extproc_health.as_ref().map(|(r, _)| r.clone()));
        for health in reporters {
            runtime.block_on(async move {
                for service in HEALTH_SERVICES {
                    health.set_service_status(service, status).await;
                }
            });
        }
    }

    /// Report NOT_SERVING, answer still-queued requests 503 rejected-shutting-down, let open
    /// streams finish for up to `grace`, then stop everything.
    pub fn stop(&mut self, grace: Duration) {
        if self.runtime.is_none() {
            return;
        }
        self.set_serving(false);
        if !grace.is_zero() {
            std::thread::sleep(grace.min(Duration::from_secs(1))); // proxies see the health flip first
        }
        if let Some(gate) = &self.gate {
            gate.shutdown();
        }
        let _ = self.shutdown.send(true);
        let tasks = std::mem::take(&mut self.tasks);
        if let Some(runtime) = self.runtime.take() {
            runtime.block_on(async {
                let all = async {
                    for task in tasks {
                        let _ = task.await;
                    }
                };
                let _ = tokio::time::timeout(grace, all).await;
            });
            // Streams still open after the grace period are cut here.
            runtime.shutdown_timeout(Duration::from_millis(100));
        }
    }
}

impl Drop for ExtProcServer {
    fn drop(&mut self) {
        self.stop(Duration::ZERO);
    }
}

fn bind(host: &str, port: u16) -> Result<StdListener, ServerError> {
    let address = format!("{host}:{port}");
    let listener = StdListener::bind((host, port)).map_err(|source| ServerError::Bind {
        address: address.clone(),
        source,
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| ServerError::Bind { address, source })?;
    Ok(listener)
}

fn local_port(listener: &StdListener, host: &str) -> Result<u16, ServerError> {
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|source| ServerError::Bind {
            address: host.to_owned(),
            source,
        })
}

fn listen(listener: StdListener, port: &str) -> Result<tokio::net::TcpListener, ServerError> {
    tokio::net::TcpListener::from_std(listener).map_err(|source| ServerError::Bind {
        address: format!("port {port}"),
        source,
    })
}

fn plain(listener: tokio::net::TcpListener) -> TcpIncoming {
    // Every ext_proc message is small and latency-bound: never wait for Nagle.
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

async fn report(
    what: &'static str,
    serving: impl std::future::Future<Output = Result<(), tonic::transport::Error>>,
) {
    if let Err(e) = serving.await {
        eprintln!(
            "sluicegate-extproc: {what} server failed: {}",
            error_chain(&e)
        );
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
