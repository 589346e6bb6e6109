//! Opening the object store that a broadcast is published to.
//!
//! Contract: [`open_store`] turns one URL into a [`Store`]: a shared
//! `Arc<dyn ObjectStore>`, the URL to name in logs and errors, and what the
//! backend can do ([`Capabilities`]). Accepted forms:
//!
//! | URL                          | backend                                             |
//! |------------------------------|-----------------------------------------------------|
//! | `file:///abs/path`           | `LocalFileSystem` rooted there (directory created)  |
//! | `./relative` or `/abs/path`  | the same, the path made absolute first              |
//! | `memory://`                  | `InMemory` (one process only; for tests and demos)  |
//! | `s3://bucket/prefix`         | Amazon S3 or any S3-compatible store                |
//! | `gs://bucket/prefix`         | Google Cloud Storage                                |
//! | `az://container/prefix`      | Azure Blob Storage                                  |
//!
//! Cloud credentials, endpoints and regions come from the environment exactly
//! as the `object_store` builders read it (`AmazonS3Builder::from_env` and its
//! siblings): `AWS_ENDPOINT`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_REGION`, `AWS_ALLOW_HTTP`, `GOOGLE_SERVICE_ACCOUNT`,
//! `AZURE_STORAGE_ACCOUNT_NAME`, and so on. A URL path below the bucket is
//! applied with `PrefixStore`, so keys handed to the publisher are always
//! relative to that root.
//!
//! Retries belong to the publisher's [`RetryPolicy`](super::RetryPolicy), not to
//! the HTTP client: cloud backends are built with client retries switched off
//! and with short connect and request timeouts ([`StoreOptions`]), so one
//! attempt against an unreachable store ends quickly and the total time to
//! give up is bounded by the publisher's policy alone.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStore;
#[cfg(feature = "s3")]
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
#[cfg(feature = "azure")]
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
#[cfg(feature = "gcs")]
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
#[cfg(any(feature = "s3", feature = "gcs", feature = "azure"))]
use object_store::{ClientConfigKey, RetryConfig};

/// What a backend supports beyond plain put/get/delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// The backend stores `Content-Type` and `Cache-Control` with each object
    /// and returns them on get/head. `LocalFileSystem` does not (it answers
    /// `NotImplemented`); there the origin derives these headers itself.
    pub supports_attributes: bool,
}

/// An opened object store: the backend, the URL it was opened from, and its
/// capabilities. Cheap to clone (the backend is shared).
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    url: String,
    capabilities: Capabilities,
}

impl Store {
    /// Wraps an already built backend. `url` is only used for display in logs
    /// and errors. Useful for wrappers that add behaviour (throttling, fault
    /// injection, recording) around a backend from [`open_store`].
    pub fn new(
        inner: Arc<dyn ObjectStore>,
        url: impl Into<String>,
        capabilities: Capabilities,
    ) -> Self {
        Self {
            inner,
            url: url.into(),
            capabilities,
        }
    }

    /// The backend, for direct reads (the origin) or for wrapping.
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    /// The URL the store was opened from, for logs and error messages.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// What the backend supports.
    pub fn capabilities(&self) -> Capabilities {
        self.capabilities
    }
}

/// Client settings for cloud backends. The defaults keep a single request
/// against an unreachable store short, so that the publisher's retry policy
/// decides how long to keep trying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// Time allowed to open a TCP (and TLS) connection. Default 2 s: a store in
    /// the same region connects in milliseconds; a black-holed address must
    /// not stall a live broadcast for the client's 5 s default.
    pub connect_timeout: Duration,
    /// Time allowed for one whole request, body included. Default 10 s: a
    /// segment of a few seconds of audio is tens of kilobytes, so a request
    /// that takes longer is stuck and better retried.
    pub request_timeout: Duration,
    /// Backend configuration keys applied over the environment, in
    /// `object_store`'s own names, e.g. `("aws_endpoint", "http://…")` or
    /// `("google_service_account", "/path/key.json")`. Later entries win;
    /// an explicit `connect_timeout` or `timeout` key overrides the fields above.
    /// Only cloud backends take options.
    pub config: Vec<(String, String)>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
            config: Vec::new(),
        }
    }
}

/// Why a store could not be opened. Every variant is a configuration problem:
/// fix the URL or the environment and start again.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL could not be parsed.
    #[error("store URL {url:?} is not a valid URL: {source}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// The parser's complaint.
        source: url::ParseError,
    },
    /// The URL names a scheme no backend handles.
    #[error(
        "store URL {url:?} has unsupported scheme {scheme:?}; use file://, memory://, s3://, gs:// or az://, or a plain directory path"
    )]
    UnknownScheme {
        /// The URL as given.
        url: String,
        /// Its scheme.
        scheme: String,
    },
    /// A cloud URL without a bucket or container name.
    #[error("store URL {url:?} names no bucket; write it as {scheme}://BUCKET/optional/prefix")]
    MissingBucket {
        /// The URL as given.
        url: String,
        /// Its scheme.
        scheme: String,
    },
    /// A `file:` URL that does not denote a local absolute path.
    #[error("store URL {url:?} is not a local absolute path; write it as file:///absolute/path")]
    NotALocalPath {
        /// The URL as given.
        url: String,
    },
    /// The current directory, needed to make a relative path absolute, is
    /// unavailable.
    #[error("cannot make store path {path:?} absolute: {source}")]
    CurrentDir {
        /// The relative path as given.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The directory of a local store could not be created.
    #[error("cannot create store directory {path:?}: {source}")]
    CreateDirectory {
        /// The directory.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The URL path below the bucket is not a valid object path.
    #[error("store URL {url:?} has an invalid prefix: {source}")]
    InvalidPrefix {
        /// The URL as given.
        url: String,
        /// Why the prefix is invalid.
        source: object_store::path::Error,
    },
    /// A configuration key in [`StoreOptions::config`] that the backend does
    /// not know, or options given for a backend that takes none.
    #[error("store {url:?} does not take the option {key:?}: {reason}")]
    UnknownOption {
        /// The URL as given.
        url: String,
        /// The option key.
        key: String,
        /// Why it was refused.
        reason: String,
    },
    /// The URL names a cloud backend this build of onair leaves out (Cargo
    /// features `s3`, `gcs`, `azure`).
    #[error(
        "store URL {url:?} needs the {scheme}:// backend, which this onair was built without; rebuild with `--features {feature}`"
    )]
    NotBuilt {
        /// The URL as given.
        url: String,
        /// Its scheme.
        scheme: String,
        /// The Cargo feature that brings the backend.
        feature: &'static str,
    },
    /// The backend builder rejected its configuration (missing credentials,
    /// malformed endpoint, ...).
    #[error("cannot open store {url:?} ({hint}): {source}")]
    Build {
        /// The URL as given.
        url: String,
        /// Where that backend reads its configuration from.
        hint: &'static str,
        /// The builder's error.
        source: object_store::Error,
    },
}

/// Opens the store named by `url` with default [`StoreOptions`].
pub fn open_store(url: &str) -> Result<Store, StoreError> {
    open_store_with(url, &StoreOptions::default())
}

/// Opens the store named by `url` (see the module docs for the accepted forms).
///
/// Local stores create their directory; cloud stores are not contacted here,
/// so a wrong endpoint or missing bucket shows up on the first put.
pub fn open_store_with(url: &str, options: &StoreOptions) -> Result<Store, StoreError> {
    let parsed = match url::Url::parse(url) {
        Ok(parsed) => parsed,
        // No scheme at all: a plain filesystem path such as `./onair-data`.
        Err(url::ParseError::RelativeUrlWithoutBase) => {
            no_options(url, options)?;
            return open_local_path(FsPath::new(url));
        }
        Err(source) => {
            return Err(StoreError::InvalidUrl {
                url: url.to_owned(),
                source,
            });
        }
    };
    match parsed.scheme() {
        "file" => {
            no_options(url, options)?;
            if parsed
                .host_str()
                .is_some_and(|h| !h.is_empty() && h != "localhost")
            {
                return Err(StoreError::NotALocalPath {
                    url: url.to_owned(),
                });
            }
            let path = parsed
                .to_file_path()
                .map_err(|()| StoreError::NotALocalPath {
                    url: url.to_owned(),
                })?;
            open_local_path(&path)
        }
        "memory" => {
            no_options(url, options)?;
            // `memory://a/b` and `memory:///a/b` both mean the prefix `a/b`.
            let joined = format!("{}/{}", parsed.host_str().unwrap_or(""), parsed.path());
            let prefix = parse_prefix(url, &joined)?;
            let store = with_prefix(InMemory::new(), prefix);
            Ok(Store::new(
                store,
                url,
                Capabilities {
                    supports_attributes: true,
                },
            ))
        }
        scheme @ ("s3" | "gs" | "az") => {
            let bucket = parsed.host_str().filter(|b| !b.is_empty()).ok_or_else(|| {
                StoreError::MissingBucket {
                    url: url.to_owned(),
                    scheme: scheme.to_owned(),
                }
            })?;
            let prefix = url_prefix(url, &parsed)?;
            let store = open_cloud(url, scheme, bucket, prefix, options)?;
            Ok(Store::new(
                store,
                url,
                Capabilities {
                    supports_attributes: true,
                },
            ))
        }
        other => Err(StoreError::UnknownScheme {
            url: url.to_owned(),
            scheme: other.to_owned(),
        }),
    }
}

/// The client retry configuration for cloud backends: no retries of its own,
/// because the publisher retries whole operations with its own policy and a
/// second, nested retry loop would multiply the time to give up.
#[cfg(any(feature = "s3", feature = "gcs", feature = "azure"))]
fn no_client_retries(options: &StoreOptions) -> RetryConfig {
    RetryConfig {
        max_retries: 0,
        retry_timeout: options.request_timeout,
        ..RetryConfig::default()
    }
}

/// A duration in the `humantime` form the `object_store` config keys parse.
#[cfg(any(feature = "s3", feature = "gcs", feature = "azure"))]
fn client_timeouts(options: &StoreOptions) -> (String, String) {
    (
        config_duration(options.connect_timeout),
        config_duration(options.request_timeout),
    )
}

/// A backend builder's refusal, with where that backend reads its settings.
#[cfg(any(feature = "s3", feature = "gcs", feature = "azure"))]
fn build_error(url: &str, hint: &'static str) -> impl FnOnce(object_store::Error) -> StoreError {
    let url = url.to_owned();
    move |source| StoreError::Build { url, hint, source }
}

#[cfg(any(feature = "s3", feature = "gcs", feature = "azure"))]
fn config_duration(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// Opens a cloud backend, if this build has it.
fn open_cloud(
    url: &str,
    scheme: &str,
    bucket: &str,
    prefix: Option<Path>,
    options: &StoreOptions,
) -> Result<Arc<dyn ObjectStore>, StoreError> {
    match scheme {
        #[cfg(feature = "s3")]
        "s3" => open_s3(url, bucket, prefix, options),
        #[cfg(feature = "gcs")]
        "gs" => open_gcs(url, bucket, prefix, options),
        #[cfg(feature = "azure")]
        "az" => open_azure(url, bucket, prefix, options),
        _ => {
            let _ = (bucket, prefix, options);
            Err(StoreError::NotBuilt {
                url: url.to_owned(),
                scheme: scheme.to_owned(),
                feature: match scheme {
                    "s3" => "s3",
                    "gs" => "gcs",
                    _ => "azure",
                },
            })
        }
    }
}

#[cfg(feature = "s3")]
fn open_s3(
    url: &str,
    bucket: &str,
    prefix: Option<Path>,
    options: &StoreOptions,
) -> Result<Arc<dyn ObjectStore>, StoreError> {
    let (connect, request) = client_timeouts(options);
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_retry(no_client_retries(options))
        .with_config(
            AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
            connect,
        )
        .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::Timeout), request);
    for (key, value) in &options.config {
        builder = builder.with_config(parse_option(url, key)?, value);
    }
    let hint = "S3 settings come from AWS_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ALLOW_HTTP";
    let store = builder.build().map_err(build_error(url, hint))?;
    Ok(with_prefix(store, prefix))
}

#[cfg(feature = "gcs")]
fn open_gcs(
    url: &str,
    bucket: &str,
    prefix: Option<Path>,
    options: &StoreOptions,
) -> Result<Arc<dyn ObjectStore>, StoreError> {
    let (connect, request) = client_timeouts(options);
    let mut builder = GoogleCloudStorageBuilder::from_env()
        .with_bucket_name(bucket)
        .with_retry(no_client_retries(options))
        .with_config(
            GoogleConfigKey::Client(ClientConfigKey::ConnectTimeout),
            connect,
        )
        .with_config(GoogleConfigKey::Client(ClientConfigKey::Timeout), request);
    for (key, value) in &options.config {
        builder = builder.with_config(parse_option(url, key)?, value);
    }
    let hint = "Google Cloud Storage settings come from GOOGLE_SERVICE_ACCOUNT, GOOGLE_SERVICE_ACCOUNT_KEY, GOOGLE_APPLICATION_CREDENTIALS";
    let store = builder.build().map_err(build_error(url, hint))?;
    Ok(with_prefix(store, prefix))
}

#[cfg(feature = "azure")]
fn open_azure(
    url: &str,
    bucket: &str,
    prefix: Option<Path>,
    options: &StoreOptions,
) -> Result<Arc<dyn ObjectStore>, StoreError> {
    let (connect, request) = client_timeouts(options);
    let mut builder = MicrosoftAzureBuilder::from_env()
        .with_container_name(bucket)
        .with_retry(no_client_retries(options))
        .with_config(
            AzureConfigKey::Client(ClientConfigKey::ConnectTimeout),
            connect,
        )
        .with_config(AzureConfigKey::Client(ClientConfigKey::Timeout), request);
    for (key, value) in &options.config {
        builder = builder.with_config(parse_option(url, key)?, value);
    }
    let hint = "Azure settings come from AZURE_STORAGE_ACCOUNT_NAME, AZURE_STORAGE_ACCOUNT_KEY and related AZURE_* variables";
    let store = builder.build().map_err(build_error(url, hint))?;
    Ok(with_prefix(store, prefix))
}

/// Parses one configuration key of a backend (`AmazonS3ConfigKey`, ...).
#[cfg(any(feature = "s3", feature = "gcs", feature = "azure"))]
fn parse_option<K>(url: &str, key: &str) -> Result<K, StoreError>
where
    K: std::str::FromStr<Err = object_store::Error>,
{
    key.parse()
        .map_err(|error: object_store::Error| StoreError::UnknownOption {
            url: url.to_owned(),
            key: key.to_owned(),
            reason: error.to_string(),
        })
}

/// Refuses options for backends that take none, rather than ignoring them.
fn no_options(url: &str, options: &StoreOptions) -> Result<(), StoreError> {
    match options.config.first() {
        Some((key, _)) => Err(StoreError::UnknownOption {
            url: url.to_owned(),
            key: key.clone(),
            reason: "local and in-memory stores take no options".to_owned(),
        }),
        None => Ok(()),
    }
}

/// The path below the bucket, if any, as an object path.
fn url_prefix(url: &str, parsed: &url::Url) -> Result<Option<Path>, StoreError> {
    parse_prefix(url, parsed.path())
}

fn parse_prefix(url: &str, raw: &str) -> Result<Option<Path>, StoreError> {
    let raw = raw.trim_matches('/');
    if raw.is_empty() {
        return Ok(None);
    }
    Path::parse(raw)
        .map(Some)
        .map_err(|source| StoreError::InvalidPrefix {
            url: url.to_owned(),
            source,
        })
}

fn with_prefix<S: ObjectStore>(store: S, prefix: Option<Path>) -> Arc<dyn ObjectStore> {
    match prefix {
        Some(prefix) => Arc::new(PrefixStore::new(store, prefix)),
        None => Arc::new(store),
    }
}

fn open_local_path(path: &FsPath) -> Result<Store, StoreError> {
    let absolute = std::path::absolute(path).map_err(|source| StoreError::CurrentDir {
        path: path.to_owned(),
        source,
    })?;
    std::fs::create_dir_all(&absolute).map_err(|source| StoreError::CreateDirectory {
        path: absolute.clone(),
        source,
    })?;
    let store =
        LocalFileSystem::new_with_prefix(&absolute).map_err(|source| StoreError::Build {
            url: absolute.display().to_string(),
            hint: "a local directory",
            source,
        })?;
    let display = url::Url::from_directory_path(&absolute)
        .map(String::from)
        .unwrap_or_else(|()| absolute.display().to_string());
    Ok(Store::new(
        Arc::new(store),
        display,
        // LocalFileSystem answers NotImplemented for any attribute.
        Capabilities {
            supports_attributes: false,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_path_is_made_absolute_and_created() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("nested").join("data");
        let store = open_store(target.to_str().expect("utf-8 path")).expect("open");
        assert!(target.is_dir(), "directory was not created");
        assert!(store.url().starts_with("file:///"), "{}", store.url());
        assert!(!store.capabilities().supports_attributes);
    }

    #[test]
    fn file_url_opens_local_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = url::Url::from_directory_path(dir.path()).expect("url");
        let store = open_store(url.as_str()).expect("open");
        assert!(!store.capabilities().supports_attributes);
    }

    #[test]
    fn file_url_with_remote_host_is_rejected() {
        let err = open_store("file://example.com/srv/data").expect_err("must fail");
        assert!(matches!(err, StoreError::NotALocalPath { .. }), "{err}");
    }

    #[test]
    fn memory_store_supports_attributes() {
        let store = open_store("memory://").expect("open");
        assert!(store.capabilities().supports_attributes);
        assert_eq!(store.url(), "memory://");
    }

    #[test]
    fn unknown_scheme_names_the_scheme_and_the_alternatives() {
        let err = open_store("ftp://host/dir").expect_err("must fail");
        let text = err.to_string();
        assert!(matches!(err, StoreError::UnknownScheme { .. }));
        assert!(text.contains("\"ftp\"") && text.contains("s3://"), "{text}");
    }

    #[test]
    fn cloud_url_without_bucket_is_rejected() {
        let err = open_store("s3:///prefix").expect_err("must fail");
        assert!(matches!(err, StoreError::MissingBucket { .. }), "{err}");
    }

    #[test]
    fn s3_url_builds_without_contacting_the_store() {
        // Building only validates configuration; no request is made.
        let store = open_store("s3://some-bucket/live/show").expect("open");
        assert!(store.capabilities().supports_attributes);
        assert_eq!(store.url(), "s3://some-bucket/live/show");
    }

    #[test]
    fn unknown_option_is_named() {
        let options = StoreOptions {
            config: vec![("aws_no_such_key".into(), "1".into())],
            ..StoreOptions::default()
        };
        let err = open_store_with("s3://bucket", &options).expect_err("must fail");
        assert!(
            matches!(&err, StoreError::UnknownOption { key, .. } if key == "aws_no_such_key"),
            "{err}"
        );
        let err = open_store_with(
            "memory://",
            &StoreOptions {
                config: vec![("aws_endpoint".into(), "http://x".into())],
                ..StoreOptions::default()
            },
        )
        .expect_err("memory takes no options");
        assert!(matches!(err, StoreError::UnknownOption { .. }), "{err}");
    }

    #[test]
    fn prefix_is_applied_below_the_bucket() {
        let parsed = url::Url::parse("memory:///a/b/").expect("url");
        let prefix = url_prefix("memory:///a/b/", &parsed).expect("prefix");
        assert_eq!(prefix, Some(Path::from("a/b")));
        let parsed = url::Url::parse("s3://bucket").expect("url");
        assert_eq!(url_prefix("s3://bucket", &parsed).expect("prefix"), None);
        let parsed = url::Url::parse("s3://bucket/a//b").expect("url");
        assert!(url_prefix("s3://bucket/a//b", &parsed).is_err());
    }
}
