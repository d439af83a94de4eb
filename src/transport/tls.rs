//! SIP over TLS (RFC 3261 §26.2, RFC 5630) with `rustls`: listeners that
//! present our certificate and may ask dialers for theirs (a verified
//! client certificate names a tenant), and connections to carriers whose
//! certificates are verified against the system's roots or a configured CA.
//! Certificates and keys are read from PEM files and read again on reload;
//! connections already open keep the configuration they started with.

use arc_swap::ArcSwap;
use dashmap::DashMap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("TLS: {0}")]
    Config(String),
}

fn file_err(path: &Path, message: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_owned(),
        message: message.to_string(),
    }
}

/// Where the TLS material is (paths as given, already made absolute).
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    /// Our certificate chain and private key (PEM): listeners present
    /// them, and carriers that ask for a client certificate get them.
    pub certificate: Option<PathBuf>,
    pub private_key: Option<PathBuf>,
    /// CA (PEM) whose certificates dialers may present; absent: none asked.
    pub client_ca: Option<PathBuf>,
    /// CA (PEM) carriers' certificates are verified against; absent: the
    /// system's trust store.
    pub carrier_ca: Option<PathBuf>,
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(path, e))?;
    if certs.is_empty() {
        return Err(file_err(path, "no PEM certificate in the file"));
    }
    Ok(certs)
}

fn roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for c in certs(path)? {
        store.add(c).map_err(|e| file_err(path, e))?;
    }
    Ok(store)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The two rustls configurations made from [`TlsFiles`].
struct Configs {
    server: Option<Arc<ServerConfig>>,
    client: Arc<ClientConfig>,
}

fn build(files: &TlsFiles) -> Result<Configs, TlsError> {
    let ours = match (&files.certificate, &files.private_key) {
        (Some(c), Some(k)) => {
            let key = PrivateKeyDer::from_pem_file(k).map_err(|e| file_err(k, e))?;
            Some((certs(c)?, key))
        }
        (None, None) => None,
        _ => {
            return Err(TlsError::Config(
                "`certificate` and `private_key` go together".into(),
            ))
        }
    };
    let server = match &ours {
        None => None,
        Some((chain, key)) => {
            let builder = ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| TlsError::Config(e.to_string()))?;
            let builder = match &files.client_ca {
                // Dialers without a certificate are still served: they are
                // recognised by their source network instead.
                Some(ca) => builder.with_client_cert_verifier(
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider())
                        .allow_unauthenticated()
                        .build()
                        .map_err(|e| file_err(ca, e))?,
                ),
                None => builder.with_no_client_auth(),
            };
            let cfg = builder
                .with_single_cert(chain.clone(), key.clone_key())
                .map_err(|e| TlsError::Config(format!("certificate and key: {e}")))?;
            Some(Arc::new(cfg))
        }
    };
    let trust = match &files.carrier_ca {
        Some(ca) => roots(ca)?,
        None => {
            let found = rustls_native_certs::load_native_certs();
            let mut store = RootCertStore::empty();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                tracing::warn!("no usable certificate in the system's trust store: TLS carriers need `tls.carrier_ca`");
            }
            store
        }
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(trust);
    let client = match ours {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| TlsError::Config(format!("client certificate: {e}")))?,
        None => builder.with_no_client_auth(),
    };
    Ok(Configs {
        server,
        client: Arc::new(client),
    })
}

/// The running TLS configuration, swapped whole on reload.
pub struct Tls {
    server: ArcSwap<Option<Arc<ServerConfig>>>,
    client: ArcSwap<ClientConfig>,
    /// The name a carrier's certificate must carry, by the address of each
    /// TLS carrier target (the address itself when it has no name).
    names: ArcSwap<HashMap<SocketAddr, String>>,
}

impl Tls {
    pub fn new(files: &TlsFiles) -> Result<Tls, TlsError> {
        let c = build(files)?;
        Ok(Tls {
            server: ArcSwap::from_pointee(c.server),
            client: ArcSwap::new(c.client),
            names: Default::default(),
        })
    }

    /// Reads the files again; on error the running configuration stays.
    pub fn reload(&self, files: &TlsFiles) -> Result<(), TlsError> {
        let c = build(files)?;
        self.server.store(Arc::new(c.server));
        self.client.store(c.client);
        Ok(())
    }

    /// Whether a certificate is loaded (a `tls:` listener needs one).
    pub fn can_serve(&self) -> bool {
        self.server.load().is_some()
    }

    pub fn acceptor(&self) -> Option<tokio_rustls::TlsAcceptor> {
        self.server
            .load()
            .as_ref()
            .as_ref()
            .map(|c| tokio_rustls::TlsAcceptor::from(c.clone()))
    }

    pub fn connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.client.load_full())
    }

    pub fn set_names(&self, names: HashMap<SocketAddr, String>) {
        self.names.store(Arc::new(names));
    }

    /// The server name to verify when connecting to `addr`.
    pub fn server_name(&self, addr: SocketAddr) -> Option<ServerName<'static>> {
        match self.names.load().get(&addr) {
            Some(n) => ServerName::try_from(n.clone()).ok(),
            None => Some(ServerName::IpAddress(addr.ip().into())),
        }
    }

    /// Whether `addr` is a TLS carrier target: reached only through a
    /// connection of its own, never one another peer opened from the same
    /// host.
    pub fn is_carrier(&self, addr: SocketAddr) -> bool {
        self.names.load().contains_key(&addr)
    }
}

/// Names a verified client certificate gives its holder: its DNS subject
/// alternative names, then its subject common name.
pub fn certificate_names(cert: &CertificateDer<'_>) -> Vec<Arc<str>> {
    use x509_parser::prelude::*;
    let Ok((_, x)) = X509Certificate::from_der(cert.as_ref()) else {
        return Vec::new();
    };
    let mut names: Vec<Arc<str>> = Vec::new();
    if let Ok(Some(san)) = x.subject_alternative_name() {
        for n in &san.value.general_names {
            if let GeneralName::DNSName(d) = n {
                names.push(d.to_ascii_lowercase().into());
            }
        }
    }
    for cn in x.subject().iter_common_name() {
        if let Ok(s) = cn.as_str() {
            names.push(s.to_ascii_lowercase().into());
        }
    }
    names
}

/// The client-certificate names of the TLS connections open now, by
/// remote address: how the gate recognises a tenant by certificate.
#[derive(Debug, Default)]
pub struct PeerNames {
    map: DashMap<SocketAddr, Arc<[Arc<str>]>>,
}

impl PeerNames {
    pub fn insert(&self, addr: SocketAddr, names: Vec<Arc<str>>) {
        if !names.is_empty() {
            self.map.insert(addr, names.into());
        }
    }

    pub fn remove(&self, addr: &SocketAddr) {
        self.map.remove(addr);
    }

    /// The names of the connection from `addr`.
    pub fn get(&self, addr: &SocketAddr) -> Option<Arc<[Arc<str>]>> {
        self.map.get(addr).map(|e| e.value().clone())
    }

    /// The names of any connection from `ip` (a dialer's Contact is on the
    /// host its connection comes from, at another port).
    pub fn by_ip(&self, ip: std::net::IpAddr) -> Option<Arc<[Arc<str>]>> {
        self.map
            .iter()
            .find(|e| e.key().ip() == ip)
            .map(|e| e.value().clone())
    }
}
