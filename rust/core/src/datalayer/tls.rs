//! HTTPS for the pollers, with upstream's HTTP data-source TLS options: verify the server against
//! a PEM CA bundle (`caCertPath`) or the system bundle, or not at all (`insecureSkipVerify`), and
//! present a client certificate (`clientCertPath` + `clientKeyPath`) for mTLS. Files are read once,
//! when the Router is built, so a bad path is a config error naming the field.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde::Deserialize;

/// The label discovery puts on an endpoint resolved from a DNS name (datalayer.hostnames): the
/// name a certificate is verified against.
pub const HOSTNAME_LABEL: &str = "sluicegate.io/hostname";

/// Where the system CA bundle usually is (as Go's crypto/x509 looks); `SSL_CERT_FILE` first.
const SYSTEM_BUNDLES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// The TLS parameters as the config carries them (camelCase, upstream's names).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsOptions {
    #[serde(default)]
    pub insecure_skip_verify: bool,
    pub ca_cert_path: Option<String>,
    pub client_cert_path: Option<String>,
    pub client_key_path: Option<String>,
}

/// A built client configuration, shared by every connection of one poller.
#[derive(Clone)]
pub struct TlsClient(pub Arc<ClientConfig>);

impl fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsClient")
    }
}

impl PartialEq for TlsClient {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for TlsClient {}

impl TlsOptions {
    /// The client configuration; errors name the field (`caCertPath`, ...) and the file.
    pub fn build(&self) -> Result<TlsClient, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let builder = if self.insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
        } else {
            builder.with_root_certificates(self.roots()?)
        };
        let config = match (&self.client_cert_path, &self.client_key_path) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => {
                let chain = certificates(cert, "clientCertPath")?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| format!("clientKeyPath: '{key}': no private key read ({e})"))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("clientCertPath/clientKeyPath: {e}"))?
            }
            (Some(_), None) => return Err("clientKeyPath: required with clientCertPath".into()),
            (None, Some(_)) => return Err("clientCertPath: required with clientKeyPath".into()),
        };
        Ok(TlsClient(Arc::new(config)))
    }

    fn roots(&self) -> Result<RootCertStore, String> {
        let (path, field) = match &self.ca_cert_path {
            Some(path) => (path.clone(), "caCertPath"),
            None => (system_bundle()?, "the system CA bundle"),
        };
        let mut roots = RootCertStore::empty();
        let (added, _) = roots.add_parsable_certificates(certificates(&path, field)?);
        if added == 0 {
            return Err(format!("{field}: '{path}' holds no usable CA certificate"));
        }
        Ok(roots)
    }
}

fn system_bundle() -> Result<String, String> {
    let env = std::env::var("SSL_CERT_FILE").ok();
    env.into_iter()
        .chain(SYSTEM_BUNDLES.iter().map(|s| s.to_string()))
        .find(|p| std::path::Path::new(p).is_file())
        .ok_or_else(|| "no system CA bundle found: set caCertPath (or insecureSkipVerify)".into())
}

fn certificates(path: &str, field: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{field}: '{path}': {e}"))?;
    if certs.is_empty() {
        return Err(format!("{field}: '{path}' holds no PEM certificate"));
    }
    Ok(certs)
}

/// The server name a connection verifies: the endpoint's DNS name when discovery had one,
/// else its IP (certificates then need an IP SAN, as with Go's client).
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(bare.to_owned()).map_err(|e| format!("'{host}': {e}"))
}

/// insecureSkipVerify: any certificate is taken; the handshake signatures are still checked.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
