//! TLS for the ext_proc port as upstream's flags ask: the certificate re-read from --cert-path
//! when its files change (--enable-cert-reload; the next handshake serves it, no restart), a
//! minimum version (--tls-min-version) and TLS 1.2 suites by their Go names (--tls-cipher-suites).
//! tonic's own TLS has none of these, so connections are terminated here with rustls and handed
//! to tonic as streams; what rustls cannot do is refused by name.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, SupportedProtocolVersion};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;

use crate::log::{self, Field, Level};

/// A client that opens a connection and never finishes the handshake is dropped after this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What upstream's TLS flags asked for.
#[derive(Debug, Clone, Default)]
pub struct TlsPolicy {
    /// --cert-path with --enable-cert-reload: the folder whose tls.crt / tls.key are watched.
    pub reload_dir: Option<PathBuf>,
    /// --tls-min-version: VersionTLS10 … VersionTLS13.
    pub min_version: Option<String>,
    /// --tls-cipher-suites: Go crypto/tls names.
    pub cipher_suites: Vec<String>,
}

/// Go's names of the suites it knows that rustls does not implement (CBC, RC4, 3DES, RSA key
/// exchange): refused by name rather than taken as unknown.
const GO_ONLY_SUITES: [&str; 16] = [
    "TLS_RSA_WITH_RC4_128_SHA",
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
];

/// Go's spelling of the TLS 1.3 suites (rustls prefixes them TLS13_).
fn go_name(suite: &rustls::SupportedCipherSuite) -> String {
    let name = format!("{:?}", suite.suite());
    name.replacen("TLS13_", "TLS_", 1)
}

/// The rustls ServerConfig for `cert`/`key` under `policy`, with ALPN h2 (gRPC).
pub fn server_config(cert: &[u8], key: &[u8], policy: &TlsPolicy) -> Result<ServerConfig, String> {
    let provider = Arc::new(provider(&policy.cipher_suites)?);
    let resolver = CertResolver::new(cert, key, policy.reload_dir.clone(), provider.clone())
        .map_err(|e| format!("tls_cert_pem/tls_key_pem: {e}"))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions(policy.min_version.as_deref())?)
        .map_err(|e| format!("--tls-cipher-suites/--tls-min-version: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// ring's suites: every TLS 1.3 one (Go cannot restrict those either), and of the TLS 1.2 ones
/// those named, in the order named; all of them when none is named.
fn provider(names: &[String]) -> Result<CryptoProvider, String> {
    let mut provider = ring::default_provider();
    if names.is_empty() {
        return Ok(provider);
    }
    let all = std::mem::take(&mut provider.cipher_suites);
    provider.cipher_suites = all
        .iter()
        .filter(|s| s.version() == &rustls::version::TLS13)
        .copied()
        .collect();
    for name in names {
        match all.iter().find(|s| go_name(s) == *name) {
            Some(s) if s.version() == &rustls::version::TLS13 => {} // always on, as in Go
            Some(s) => provider.cipher_suites.push(*s),
            None if GO_ONLY_SUITES.contains(&name.as_str()) => {
                return Err(format!(
                    "--tls-cipher-suites: {name} is not served by this EPP's TLS library (rustls \
                     serves only ECDHE with AES-GCM or ChaCha20-Poly1305)"
                ))
            }
            None => {
                return Err(format!(
                    "--tls-cipher-suites: unknown cipher suite {name:?}"
                ))
            }
        }
    }
    Ok(provider)
}

static TLS13_ONLY: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS13];

fn versions(min: Option<&str>) -> Result<&'static [&'static SupportedProtocolVersion], String> {
    match min {
        // rustls has no TLS 1.0/1.1: a minimum below 1.2 is met by serving 1.2 and 1.3.
        None | Some("VersionTLS10" | "VersionTLS11" | "VersionTLS12") => Ok(rustls::ALL_VERSIONS),
        Some("VersionTLS13") => Ok(&TLS13_ONLY),
        Some(other) => Err(format!(
            "--tls-min-version: unknown TLS version {other:?}; supported values: VersionTLS10, \
             VersionTLS11, VersionTLS12, VersionTLS13"
        )),
    }
}

fn certified_key(
    cert: &[u8],
    key: &[u8],
    provider: &CryptoProvider,
) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate: {e}"))?;
    if chain.is_empty() {
        return Err("certificate: no PEM CERTIFICATE block".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("private key: {e}"))?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| format!("certificate and key: {e}"))
}

/// Files' modification times: a Kubernetes secret update relinks `..data`, which changes the
/// times of the files the names resolve to.
type Stamp = Option<(SystemTime, SystemTime)>;

fn stamp(dir: &Path) -> Stamp {
    let mtime = |name| {
        std::fs::metadata(dir.join(name))
            .and_then(|m| m.modified())
            .ok()
    };
    Some((mtime("tls.crt")?, mtime("tls.key")?))
}

/// The serving certificate; with a reload folder, checked before each handshake (a `stat` of
/// two files; proxies hold their HTTP/2 connections, so handshakes are rare) and replaced when
/// the files changed and parse as a matching pair. A half-written update keeps the old pair and
/// is retried on the next handshake.
#[derive(Debug)]
struct CertResolver {
    reload_dir: Option<PathBuf>,
    provider: Arc<CryptoProvider>,
    /// (stamp of the files served or last tried, the certificate served)
    current: RwLock<(Stamp, Arc<CertifiedKey>)>,
}

impl CertResolver {
    fn new(
        cert: &[u8],
        key: &[u8],
        reload_dir: Option<PathBuf>,
        provider: Arc<CryptoProvider>,
    ) -> Result<CertResolver, String> {
        let served = Arc::new(certified_key(cert, key, &provider)?);
        let stamp = reload_dir.as_deref().and_then(stamp);
        Ok(CertResolver {
            reload_dir,
            provider,
            current: RwLock::new((stamp, served)),
        })
    }

    fn reload(&self, dir: &Path) {
        let now = stamp(dir);
        if now.is_none() || self.current.read().unwrap_or_else(|e| e.into_inner()).0 == now {
            return;
        }
        let read = |name| std::fs::read(dir.join(name)).map_err(|e| format!("{name}: {e}"));
        let loaded = read("tls.crt")
            .and_then(|c| read("tls.key").map(|k| (c, k)))
            .and_then(|(c, k)| certified_key(&c, &k, &self.provider));
        let folder = dir.display().to_string();
        match loaded {
            Ok(key) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = (now, Arc::new(key));
                log::line(
                    Level::Info,
                    "serving the new TLS certificate",
                    &[("cert_path", Field::Str(&folder))],
                );
            }
            Err(e) => log::line(
                Level::Warning,
                "cannot reload the TLS certificate yet; serving the previous one",
                &[
                    ("cert_path", Field::Str(&folder)),
                    ("error", Field::Str(&e)),
                ],
            ),
        }
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(dir) = &self.reload_dir {
            self.reload(dir);
        }
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .1
                .clone(),
        )
    }
}

pub type TlsIncoming = ReceiverStream<Result<TlsStream<tokio::net::TcpStream>, std::io::Error>>;

/// Accept on `listener`, handshake each connection on its own task (a slow client never holds
/// up the others), hand the finished TLS streams to tonic. Stops when tonic drops the stream.
pub fn incoming(listener: TcpListener, config: Arc<ServerConfig>) -> TlsIncoming {
    let acceptor = TlsAcceptor::from(config);
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        log::line(Level::Warning, "ext_proc accept failed", &[("error", Field::Str(&e.to_string()))]);
                        tokio::time::sleep(Duration::from_millis(50)).await; // e.g. out of file descriptors
                        continue;
                    }
                },
                () = tx.closed() => return,
            };
            let _ = tcp.set_nodelay(true); // ext_proc messages are small and latency-bound
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => handshake_failed(&peer.to_string(), &e.to_string()),
                    Err(_) => handshake_failed(&peer.to_string(), "timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

fn handshake_failed(peer: &str, error: &str) {
    log::line(
        Level::Info,
        "ext_proc TLS handshake failed",
        &[("peer", Field::Str(peer)), ("error", Field::Str(error))],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_suite_names_map_to_rustls_and_tls13_suites_stay_on() {
        let p = provider(&["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".into()]).unwrap();
        let names: Vec<String> = p.cipher_suites.iter().map(go_name).collect();
        assert!(names.contains(&"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".to_string()));
        assert!(names.contains(&"TLS_AES_128_GCM_SHA256".to_string()));
        assert!(!names.contains(&"TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384".to_string()));
    }

    #[test]
    fn suites_rustls_lacks_and_unknown_names_are_refused_by_name() {
        let cbc = provider(&["TLS_RSA_WITH_AES_128_CBC_SHA".into()]).unwrap_err();
        assert!(
            cbc.contains("TLS_RSA_WITH_AES_128_CBC_SHA is not served"),
            "{cbc}"
        );
        let unknown = provider(&["TLS_FAST".into()]).unwrap_err();
        assert!(
            unknown.contains("unknown cipher suite \"TLS_FAST\""),
            "{unknown}"
        );
        let version = versions(Some("VersionTLS14")).unwrap_err();
        assert!(version.starts_with("--tls-min-version"), "{version}");
        assert_eq!(versions(Some("VersionTLS13")).unwrap().len(), 1);
    }
}
