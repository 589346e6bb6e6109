//! TLS for the built-in servers: HTTPS (listeners, the host page, WHIP, the
//! control API) and RTMPS, from one PEM certificate chain and key that can
//! be renewed while the broadcast runs.
//!
//! Contract:
//! - [`Certificate::load`] reads the chain and key once and fails with the
//!   file and the reason (unreadable, no certificate, no key, a key that
//!   does not belong to the certificate) before anything listens.
//! - Every server built on it ([`Certificate::acceptor`]) resolves the
//!   certificate per handshake, so [`Certificate::reload`] takes effect for
//!   the next connection and no running one is touched. A reload that fails
//!   keeps the certificate in use (a half-written renewal never takes a
//!   server off the air) and says why.
//! - [`watch`] reloads on SIGHUP and when either file changes (its length or
//!   modification time, looked at every [`reload::INTERVAL`]), which covers
//!   certbot, acme.sh and Kubernetes secret updates alike.
//! - TLS 1.2 and 1.3 with rustls's safe defaults; HTTP servers offer `h2`
//!   and `http/1.1` through ALPN (RFC 7301), RTMPS none.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use crate::reload::{self, Stamp};

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// ALPN protocols of the HTTP server: HTTP/2 first, HTTP/1.1 for the rest.
pub const HTTP_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

/// Why a certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read.
    #[error("cannot read {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The certificate file holds no PEM certificate.
    #[error("{path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The certificate file holds a malformed PEM section.
    #[error("{path}: malformed PEM: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What the PEM parser said.
        reason: String,
    },
    /// The key file holds no private key.
    #[error("{path} holds no PEM private key (PKCS#8, PKCS#1 or SEC1): {reason}")]
    NoKey {
        /// The file.
        path: PathBuf,
        /// What the PEM parser said.
        reason: String,
    },
    /// rustls refused the pair: an unsupported key, or a key that does not
    /// belong to the certificate.
    #[error("cannot use {cert} with {key}: {error}")]
    Refused {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's reason.
        error: rustls::Error,
    },
}

/// Where the certificate chain and its key are (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The leaf's private key.
    pub key: PathBuf,
}

/// The certificate in use, shared by every TLS server of the process and
/// replaced by [`Certificate::reload`].
#[derive(Debug, Clone)]
pub struct Certificate {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// What the files looked like when last loaded (or last failed).
    stamp: RwLock<Stamp>,
}

impl Certificate {
    /// Loads the chain and key; the error names the file and the reason.
    pub fn load(files: TlsFiles) -> Result<Certificate, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let stamp = files.stamp();
        let key = read(&files, &provider)?;
        Ok(Certificate {
            inner: Arc::new(Inner {
                files,
                provider,
                current: RwLock::new(Arc::new(key)),
                stamp: RwLock::new(stamp),
            }),
        })
    }

    /// The files this certificate comes from.
    pub fn files(&self) -> &TlsFiles {
        &self.inner.files
    }

    /// Reads the files again and, if they hold a usable pair, uses it for
    /// every handshake from now on. On error the previous pair stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        *self
            .inner
            .stamp
            .write()
            .unwrap_or_else(PoisonError::into_inner) = self.inner.files.stamp();
        let key = read(&self.inner.files, &self.inner.provider)?;
        *self
            .inner
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(key);
        Ok(())
    }

    /// Whether either file changed (length or modification time) since it
    /// was last read.
    pub fn changed(&self) -> bool {
        let now = self.inner.files.stamp();
        now.is_complete()
            && now
                != *self
                    .inner
                    .stamp
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
    }

    /// The DER bytes of the leaf certificate in use.
    pub fn leaf(&self) -> Vec<u8> {
        self.current()
            .cert
            .first()
            .map(|c| c.as_ref().to_vec())
            .unwrap_or_default()
    }

    fn current(&self) -> Arc<CertifiedKey> {
        self.inner
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A TLS acceptor using this certificate (and its reloads), offering
    /// `alpn` (most preferred first; empty for none).
    pub fn acceptor(&self, alpn: &[&[u8]]) -> tokio_rustls::TlsAcceptor {
        let mut config = ServerConfig::builder_with_provider(self.inner.provider.clone())
            .with_safe_default_protocol_versions()
            .expect("the default provider supports the default protocol versions")
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(self.clone())));
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }
}

/// Resolves every handshake to the certificate in use at that moment.
#[derive(Debug)]
struct Resolver(Certificate);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current())
    }
}

impl TlsFiles {
    fn stamp(&self) -> Stamp {
        Stamp::of(&[self.cert.clone(), self.key.clone()])
    }
}

fn read(files: &TlsFiles, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|error| TlsError::Read {
            path: path.to_owned(),
            error,
        })
    };
    let cert_pem = read(&files.cert)?;
    let key_pem = read(&files.key)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: files.cert.clone(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: files.cert.clone(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::NoKey {
        path: files.key.clone(),
        reason: e.to_string(),
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|error| TlsError::Refused {
        cert: files.cert.clone(),
        key: files.key.clone(),
        error,
    })
}

/// Reloads `certificate` on SIGHUP and whenever its files change, until the
/// task is dropped. Failed reloads are logged and keep the certificate in
/// use.
pub async fn watch(certificate: Certificate) {
    reload::watch(
        || certificate.changed(),
        |why| match certificate.reload() {
            Ok(()) => tracing::info!(
                cert = %certificate.files().cert.display(),
                "TLS certificate reloaded ({why}); new connections use it"
            ),
            Err(error) => tracing::error!(
                %error,
                "TLS certificate not reloaded ({why}); the previous one stays in use"
            ),
        },
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, name: &str) -> (TlsFiles, Vec<u8>) {
        let made = rcgen::generate_simple_self_signed(vec![name.to_owned()]).expect("certificate");
        let files = TlsFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        std::fs::write(&files.cert, made.cert.pem()).expect("write");
        std::fs::write(&files.key, made.signing_key.serialize_pem()).expect("write");
        (files, made.cert.der().to_vec())
    }

    #[test]
    fn a_pair_loads_and_a_reload_takes_the_new_one() {
        let dir = tempfile::tempdir().expect("dir");
        let (files, first) = pair(dir.path(), "one.test");
        let certificate = Certificate::load(files).expect("loads");
        assert_eq!(certificate.leaf(), first);
        assert!(!certificate.changed());
        let (_, second) = pair(dir.path(), "two.test");
        certificate.reload().expect("reloads");
        assert_eq!(certificate.leaf(), second);
    }

    #[test]
    fn a_broken_renewal_keeps_the_certificate_in_use() {
        let dir = tempfile::tempdir().expect("dir");
        let (files, first) = pair(dir.path(), "one.test");
        let certificate = Certificate::load(files.clone()).expect("loads");
        std::fs::write(&files.key, "-----BEGIN PRIVATE KEY-----\ntruncated").expect("write");
        assert!(certificate.changed());
        let error = certificate.reload().expect_err("a broken key is refused");
        assert!(matches!(error, TlsError::NoKey { .. }), "{error}");
        assert_eq!(certificate.leaf(), first);
        // Tried once: not changed again until the files change again.
        assert!(!certificate.changed());
    }

    #[test]
    fn bad_files_say_which_file_and_why() {
        let dir = tempfile::tempdir().expect("dir");
        let (good, _) = pair(dir.path(), "one.test");
        let missing = TlsFiles {
            cert: dir.path().join("nope.pem"),
            key: good.key.clone(),
        };
        let error = Certificate::load(missing).expect_err("missing");
        assert!(error.to_string().contains("nope.pem"), "{error}");

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let error = Certificate::load(TlsFiles {
            cert: empty.clone(),
            key: good.key.clone(),
        })
        .expect_err("no certificate");
        assert!(matches!(error, TlsError::NoCertificate { .. }), "{error}");

        // A key that belongs to another certificate.
        let other = tempfile::tempdir().expect("dir");
        let (stranger, _) = pair(other.path(), "two.test");
        let error = Certificate::load(TlsFiles {
            cert: good.cert.clone(),
            key: stranger.key,
        })
        .expect_err("mismatched key");
        assert!(matches!(error, TlsError::Refused { .. }), "{error}");
    }
}
