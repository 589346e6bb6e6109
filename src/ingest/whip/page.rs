//! The host page, `/{stream}/host`: publishes a browser's microphone to the
//! stream's live mix over WHIP, plays the host's mix-minus return and shows
//! who else is in the studio.
//!
//! Contract:
//! - The page POSTs its WHIP offer (RFC 9725) to `whip` relative to itself
//!   (`/{stream}/whip`), so it works behind any path prefix; it loads
//!   nothing at all from elsewhere. Its script is `host.js`, its style the
//!   shared one ([`crate::web::page::STYLE`]) and `host.css`.
//! - The host's key is typed in or read from the URL fragment by the
//!   script: it is never in the page the server sends.
//! - The offer's audio is `sendrecv`, so the WHIP endpoint sends the host
//!   its return (the program without its own voice) on the same m-line; the
//!   page plays it in an `<audio>` element and feeds it to its Web Audio
//!   graph (`window.onairReturn`, for tests to measure what the host hears).
//! - A headphones / speakers choice (headphones by default): with
//!   headphones the microphone is raw (no echo cancellation, noise
//!   suppression or gain control); with speakers it is opened again with
//!   echo cancellation, so the return coming out of the speakers does not
//!   go back into the program, and swapped in with `replaceTrack`, without
//!   a new offer.
//! - While on air the page polls `room` (relative, `GET /{stream}/room`
//!   with the key, [`crate::control::room`]) every second and lists the
//!   hosts, on air and speaking; it stops when the host goes off air.
//!   Names from the room are put in as text, never as markup.
//! - Names put into the page are escaped for where they go, with the kit of
//!   [`crate::web::page`].

use crate::web::page::{STYLE, fill, html_escape, json_object};

use super::WHIP_SEGMENT;

const HOST_TEMPLATE: &str = include_str!("host.html");
const HOST_STYLE: &str = include_str!("host.css");
const HOST_SCRIPT: &str = include_str!("host.js");

/// The last path segment of the host page (`/{stream}/host`).
pub const HOST_SEGMENT: &str = "host";

/// The page at `/{stream}/host`: asks for the microphone and publishes it to
/// the stream's live mix over WHIP with the host's key, with a level meter, a
/// mute switch, the connection's state and an "on air" indicator; plays the
/// host's return, with a headphones / speakers choice, and lists the room's
/// hosts while on air. With
/// `ice_servers`, the page fetches the STUN and TURN servers from the WHIP
/// endpoint (`GET`, with the key) before each offer; without, it makes no
/// such request.
pub fn host_page(stream: &str, ice_servers: bool) -> String {
    let ice = if ice_servers { "fetch" } else { "none" };
    let config = json_object(&[("stream", stream), ("whip", WHIP_SEGMENT), ("ice", ice)]);
    fill(
        HOST_TEMPLATE,
        &[
            ("stream", &html_escape(stream)),
            ("style", STYLE),
            ("host_style", HOST_STYLE),
            ("config", &config),
            ("script", HOST_SCRIPT),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_page_fills_every_marker_and_loads_nothing() {
        let page = host_page("morning-show", false);
        assert!(!page.contains("{{"), "unfilled marker in the page");
        assert!(page.contains("<title>Host morning-show · onair</title>"));
        assert!(page.contains("<h1>morning-show</h1>"));
        assert!(page.contains(r#"{"stream":"morning-show","whip":"whip","ice":"none"}"#));
        assert!(host_page("morning-show", true).contains(r#""ice":"fetch""#));
        assert!(page.contains("window.onairHost = host"));
        assert!(page.contains(".play {"), "the listener page's style");
        assert!(page.contains(".on-air {"), "the host page's style");
        // Hears its return, and shows the room with names as text only.
        assert!(page.contains("direction: 'sendrecv'"));
        assert!(page.contains(r#"<audio id="return" autoplay hidden></audio>"#));
        assert!(page.contains(r#"value="headphones" checked"#));
        assert!(page.contains("new URL('room', location.href)"));
        assert!(page.contains(r#"<ul id="room"></ul>"#));
        assert!(!page.contains("innerHTML"), "names must go in as text");
        // Self-contained: no script, style or image from anywhere.
        for attribute in ["src=", "<link rel=\"stylesheet\"", "@import"] {
            assert!(!page.contains(attribute), "{attribute} in the host page");
        }
    }

    #[test]
    fn host_page_keeps_hostile_names_inert() {
        let page = host_page("</script><img src=x onerror=alert(1)>", false);
        assert!(!page.contains("<img"));
        assert_eq!(page.matches("</script>").count(), 2);
        assert!(page.contains(r#""stream":"\u003c/script\u003e\u003cimg"#));
    }
}
