//! STUN and TURN servers for WHIP hosts: what `--ice-server` configures and
//! how a host gets them.
//!
//! The endpoint is ICE-lite and takes no trickled candidates (RFC 9725
//! §4.3.1), so a publisher must gather its relay candidates before it sends
//! the offer. The `Link` headers of the `201 Created` (RFC 9725 §4.6) come
//! too late for that, so the host page asks first: `GET /{stream}/whip`
//! with its bearer answers the list as JSON, ready for `new
//! RTCPeerConnection({ iceServers })`. Both that answer and every `201` also
//! carry the list as `Link: <URL>; rel="ice-server"` headers for other WHIP
//! clients (RFC 9725 §4.6, RFC 8288 §3).
//!
//! Credentials are given only to a request that presents a host key. A TURN
//! server configured without its own credentials gets short-lived ones
//! minted per request, by the "TURN REST API" convention that coturn
//! (`--use-auth-secret --static-auth-secret`), eturnal and the hosted TURN
//! services share: the username is `EXPIRY:HOST` (EXPIRY in Unix seconds),
//! the password the base64 of HMAC-SHA1 over the username, keyed by the
//! shared secret (draft-uberti-behave-turn-rest-00 §2.2). A leaked
//! credential expires by itself; the secret never leaves onair.

use std::fmt::Write as _;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;
use base64::Engine as _;
use serde::Serialize;

/// How long minted TURN credentials stay valid by default. A TURN client
/// refreshes its allocation with the same credentials, and the server
/// checks their expiry then too, so they must outlive the longest session
/// a host holds: a day, as the TURN REST API draft suggests.
pub const DEFAULT_TURN_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// One `--ice-server URL[,USERNAME,CREDENTIAL]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceServer {
    /// A `stun:`, `stuns:`, `turn:` or `turns:` URI (RFC 7064, RFC 7065).
    pub url: String,
    /// Fixed credentials; `None` for STUN, or for TURN with minted ones.
    pub credentials: Option<(String, String)>,
}

/// Why an `--ice-server` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IceServerError {
    /// Not a STUN or TURN URI.
    #[error(
        "{0:?} is not a STUN or TURN URI (stun:, stuns:, turn: or turns:HOST[:PORT][?transport=udp|tcp])"
    )]
    NotStunOrTurn(String),
    /// A username without a credential, or more than three fields.
    #[error("expected URL or URL,USERNAME,CREDENTIAL, got {0:?}")]
    Fields(String),
    /// A character that cannot go into a `Link` header.
    #[error("{0:?} has a character that cannot be sent in an HTTP header")]
    Unsendable(String),
    /// A TURN server with neither credentials nor a secret to mint them.
    #[error(
        "TURN server {0} has no credentials: give them (URL,USERNAME,CREDENTIAL) or set --turn-secret to mint short-lived ones"
    )]
    NoCredentials(String),
}

impl IceServer {
    fn is_turn(&self) -> bool {
        self.url.starts_with("turn:") || self.url.starts_with("turns:")
    }
}

impl FromStr for IceServer {
    type Err = IceServerError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Visible ASCII only: the values go into header field values.
        if s.chars().any(|c| !c.is_ascii_graphic()) {
            return Err(IceServerError::Unsendable(s.to_owned()));
        }
        let fields: Vec<&str> = s.split(',').collect();
        let (url, credentials) = match fields.as_slice() {
            [url] => (*url, None),
            [url, user, credential] if !user.is_empty() && !credential.is_empty() => {
                (*url, Some(((*user).to_owned(), (*credential).to_owned())))
            }
            _ => return Err(IceServerError::Fields(s.to_owned())),
        };
        let scheme_ok = ["stun:", "stuns:", "turn:", "turns:"]
            .iter()
            .any(|scheme| url.len() > scheme.len() && url.starts_with(scheme));
        if !scheme_ok {
            return Err(IceServerError::NotStunOrTurn(url.to_owned()));
        }
        if url.contains(['<', '>', '"', '\\']) {
            return Err(IceServerError::Unsendable(url.to_owned()));
        }
        Ok(IceServer {
            url: url.to_owned(),
            credentials,
        })
    }
}

/// One server as a WebRTC client wants it (the `RTCIceServer` dictionary of
/// the W3C WebRTC API), with the credentials for one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerFor {
    /// The URI.
    pub urls: String,
    /// The TURN username, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The TURN password, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

impl ServerFor {
    /// The `Link` header value (RFC 9725 §4.6): the URI, `rel="ice-server"`,
    /// and for TURN the username, credential and `credential-type`.
    pub fn link(&self) -> String {
        let mut link = format!("<{}>; rel=\"ice-server\"", self.urls);
        if let (Some(user), Some(credential)) = (&self.username, &self.credential) {
            let _ = write!(
                link,
                "; username=\"{}\"; credential=\"{}\"; credential-type=\"password\"",
                quoted(user),
                quoted(credential)
            );
        }
        link
    }
}

/// The body of `GET /{stream}/whip`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Configuration<'a> {
    ice_servers: &'a [ServerFor],
}

/// Escapes `"` and `\` for a quoted-string (RFC 9110 §5.6.4).
fn quoted(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The servers of a broadcast and how to credential them.
#[derive(Clone)]
pub struct IceServers {
    servers: Vec<IceServer>,
    secret: Option<hmac::Key>,
    ttl: Duration,
}

impl std::fmt::Debug for IceServers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IceServers")
            .field(
                "servers",
                &self.servers.iter().map(|s| &s.url).collect::<Vec<_>>(),
            )
            .field("minted", &self.secret.is_some())
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl IceServers {
    /// No servers: hosts must reach the endpoint's own candidates.
    pub fn none() -> Self {
        Self {
            servers: Vec::new(),
            secret: None,
            ttl: DEFAULT_TURN_TTL,
        }
    }

    /// `servers`, with TURN credentials minted from `secret` (valid `ttl`)
    /// for those configured without their own. Fails if a TURN server would
    /// have no credentials at all.
    pub fn new(
        servers: Vec<IceServer>,
        secret: Option<&str>,
        ttl: Duration,
    ) -> Result<Self, IceServerError> {
        if secret.is_none()
            && let Some(bare) = servers
                .iter()
                .find(|s| s.is_turn() && s.credentials.is_none())
        {
            return Err(IceServerError::NoCredentials(bare.url.clone()));
        }
        Ok(Self {
            servers,
            secret: secret
                .map(|s| hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, s.as_bytes())),
            ttl,
        })
    }

    /// Whether any server is configured.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// The servers with credentials for `host`, minted as of `now`.
    pub fn for_host(&self, host: &str, now: SystemTime) -> Vec<ServerFor> {
        let expiry = now
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .saturating_add(self.ttl)
            .as_secs();
        self.servers
            .iter()
            .map(|server| {
                let credentials = match (&server.credentials, &self.secret) {
                    (Some(fixed), _) => Some(fixed.clone()),
                    (None, Some(secret)) if server.is_turn() => {
                        let username = format!("{expiry}:{host}");
                        let tag = hmac::sign(secret, username.as_bytes());
                        let password =
                            base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
                        Some((username, password))
                    }
                    (None, _) => None,
                };
                let (username, credential) = credentials.unzip();
                ServerFor {
                    urls: server.url.clone(),
                    username,
                    credential,
                }
            })
            .collect()
    }

    /// The JSON body of `GET /{stream}/whip` for `servers`.
    pub fn json(servers: &[ServerFor]) -> String {
        serde_json::to_string(&Configuration {
            ice_servers: servers,
        })
        .unwrap_or_else(|_| String::from("{\"iceServers\":[]}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn parses_urls_with_and_without_credentials_and_refuses_the_rest() {
        let stun: IceServer = "stun:stun.example.net:3478".parse().expect("stun");
        assert_eq!(stun.credentials, None);
        let turn: IceServer = "turns:turn.example.net:443?transport=tcp,alice,pw"
            .parse()
            .expect("turn");
        assert_eq!(turn.url, "turns:turn.example.net:443?transport=tcp");
        assert_eq!(turn.credentials, Some(("alice".into(), "pw".into())));
        for bad in [
            "http://turn.example.net",
            "turn:",
            "turn:x,alice",
            "turn:x,,pw",
            "turn:x,a,b,c",
            "turn:x y",
            "turn:<x>",
        ] {
            assert!(bad.parse::<IceServer>().is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn a_turn_server_needs_credentials_or_a_secret() {
        let bare: IceServer = "turn:turn.example.net".parse().expect("turn");
        let stun: IceServer = "stun:stun.example.net".parse().expect("stun");
        assert_eq!(
            IceServers::new(vec![stun.clone(), bare.clone()], None, DEFAULT_TURN_TTL).err(),
            Some(IceServerError::NoCredentials(
                "turn:turn.example.net".into()
            ))
        );
        assert!(IceServers::new(vec![stun, bare], Some("s3cret"), DEFAULT_TURN_TTL).is_ok());
    }

    /// The TURN REST API credential, checked against a value computed
    /// independently (`printf %s 1700003600:carol | openssl dgst -sha1
    /// -hmac s3cret -binary | base64`).
    #[test]
    fn minted_credentials_follow_the_turn_rest_convention() {
        let servers = IceServers::new(
            vec![
                "turn:127.0.0.1:3478".parse().expect("turn"),
                "stun:127.0.0.1:3478".parse().expect("stun"),
                "turns:t.example.net,fixed,pw".parse().expect("fixed"),
            ],
            Some("s3cret"),
            Duration::from_secs(3600),
        )
        .expect("servers");
        let given = servers.for_host("carol", at(1_700_000_000));
        assert_eq!(given.len(), 3);
        assert_eq!(given[0].username.as_deref(), Some("1700003600:carol"));
        assert_eq!(
            given[0].credential.as_deref(),
            Some("iX0IzzWR+U+Z6wZ8G5YmrLGX69E=")
        );
        assert_eq!(
            (given[1].username.clone(), given[1].credential.clone()),
            (None, None)
        );
        assert_eq!(given[2].username.as_deref(), Some("fixed"));
        // A later request gets a later expiry.
        let later = servers.for_host("carol", at(1_700_000_100));
        assert_eq!(later[0].username.as_deref(), Some("1700003700:carol"));
    }

    #[test]
    fn json_and_link_headers_carry_the_same_servers() {
        let servers = IceServers::new(
            vec![
                "stun:s.example.net".parse().expect("stun"),
                "turn:t.example.net?transport=udp,u\"1,p\\w"
                    .parse()
                    .expect("turn"),
            ],
            None,
            DEFAULT_TURN_TTL,
        )
        .expect("servers");
        let given = servers.for_host("carol", at(0));
        assert_eq!(
            IceServers::json(&given),
            r#"{"iceServers":[{"urls":"stun:s.example.net"},{"urls":"turn:t.example.net?transport=udp","username":"u\"1","credential":"p\\w"}]}"#
        );
        assert_eq!(given[0].link(), r#"<stun:s.example.net>; rel="ice-server""#);
        assert_eq!(
            given[1].link(),
            r#"<turn:t.example.net?transport=udp>; rel="ice-server"; username="u\"1"; credential="p\\w"; credential-type="password""#
        );
    }
}
