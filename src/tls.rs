//! TLS. Outgoing: `rtmps://` pushes and `https://` callback receivers.
//! Incoming: the HTTPS and RTMPS listeners ([`ServerTls`]).
//!
//! One client configuration for the process (rustls with the ring
//! provider, as webrtc uses): the Mozilla root store (webpki-roots) and the
//! operator's extra roots from `tls.ca_file`, made once at start
//! ([`init`]). Certificates are always verified, with the URL's host as the
//! name (SNI for names, an IP SAN for addresses); there is no switch that
//! accepts anything. The handshake has its own deadline, and a failure says
//! why (an unknown issuer, a name the certificate does not cover, ...).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// A TLS handshake must finish within this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

static CLIENT: OnceLock<Arc<ClientConfig>> = OnceLock::new();

/// The client configuration: the Mozilla roots plus every certificate in
/// `extra_ca` (PEM).
pub fn client_config(extra_ca: Option<&Path>) -> Result<ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = extra_ca {
        for c in certificates(path)? {
            roots
                .add(c)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
}

/// Every certificate in a PEM file; none is an error. Errors name the file.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

/// Makes the process's client configuration; call once at start, before
/// anything connects. Later calls keep the first.
pub fn init(extra_ca: Option<&Path>) -> Result<(), String> {
    let config = client_config(extra_ca)?;
    let _ = CLIENT.set(Arc::new(config));
    Ok(())
}

fn client() -> Arc<ClientConfig> {
    CLIENT
        .get_or_init(|| Arc::new(client_config(None).expect("the built-in roots load")))
        .clone()
}

/// TLS over `tcp` to `host`, verified; the error says why not.
pub async fn connect(host: &str, tcp: TcpStream) -> Result<TlsStream<TcpStream>, String> {
    let name = ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']'))
        .map_err(|_| format!("`{host}` is not a valid TLS server name"))?
        .to_owned();
    let connector = TlsConnector::from(client());
    match crate::ticks::timeout(HANDSHAKE_TIMEOUT, connector.connect(name, tcp)).await {
        Err(_) => Err(format!(
            "TLS handshake with {host} timed out after {HANDSHAKE_TIMEOUT:?}"
        )),
        Ok(Err(e)) => Err(format!("TLS handshake with {host}: {e}")),
        Ok(Ok(s)) => Ok(s),
    }
}

/// The listeners' certificate: loaded at start, replaced by [`reload`]
/// (SIGHUP) without touching connections already open, which keep the
/// configuration they were accepted with. A reload that fails keeps the
/// certificate in use.
///
/// [`reload`]: ServerTls::reload
pub struct ServerTls {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Listeners>,
}

#[derive(Clone)]
struct Listeners {
    /// HTTPS: ALPN `http/1.1` (the server speaks HTTP/1.1 only).
    http: Arc<ServerConfig>,
    /// RTMPS: no ALPN.
    rtmp: Arc<ServerConfig>,
}

impl ServerTls {
    pub fn load(cert: &Path, key: &Path) -> Result<ServerTls, String> {
        Ok(ServerTls {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: RwLock::new(Self::build(cert, key)?),
        })
    }

    fn build(cert: &Path, key: &Path) -> Result<Listeners, String> {
        let chain = certificates(cert).map_err(|e| format!("tls.cert {e}"))?;
        let make = |alpn: &[&[u8]]| -> Result<Arc<ServerConfig>, String> {
            let private = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("tls.key {}: {e}", key.display()))?;
            let mut c = ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(chain.clone(), private)
            .map_err(|e| format!("tls.cert and tls.key: {e}"))?;
            c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Ok(Arc::new(c))
        };
        Ok(Listeners {
            http: make(&[b"http/1.1"])?,
            rtmp: make(&[])?,
        })
    }

    /// Reads the certificate and key again.
    pub fn reload(&self) -> Result<(), String> {
        let next = Self::build(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = next;
        Ok(())
    }

    fn listeners(&self) -> Listeners {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The acceptor for a new HTTPS connection.
    pub(crate) fn http(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.listeners().http)
    }

    /// The acceptor for a new RTMPS connection.
    pub(crate) fn rtmp(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.listeners().rtmp)
    }
}

/// A connection that may or may not be inside TLS.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
/// Plain TCP, or TLS over it. TLS holds records until flushed: flush after
/// each exchange.
pub(crate) type Conn = Box<dyn Io>;

/// `tcp` as is, or inside verified TLS to `host` when `tls`.
pub(crate) async fn wrap(host: &str, tcp: TcpStream, tls: bool) -> Result<Conn, String> {
    Ok(if tls {
        Box::new(connect(host, tcp).await?)
    } else {
        Box::new(tcp)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_empty_ca_file_is_a_clear_error() {
        assert!(client_config(None).is_ok());
        let e = client_config(Some(Path::new("/nonexistent/ca.pem"))).unwrap_err();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
        let dir = std::env::temp_dir().join(format!("roomcast-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = client_config(Some(&empty)).unwrap_err();
        assert!(e.contains("no PEM certificate"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
