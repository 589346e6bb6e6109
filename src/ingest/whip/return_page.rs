//! The return page, `/{stream}/return`: plays a host's mix-minus return
//! over WHEP (`/{stream}/whep`) with the host's key, for hosts who publish
//! from an encoder with no return path (RTMP from OBS or ffmpeg).
//!
//! Contract: as the host page ([`super::page`]): self-contained (its
//! script `return.js`, the shared style), the key typed in or read from
//! the URL fragment and never in what the server sends, names escaped for
//! where they go.

use crate::web::page::{STYLE, fill, html_escape, json_object};

use super::WHEP_SEGMENT;

const RETURN_TEMPLATE: &str = include_str!("return.html");
const RETURN_SCRIPT: &str = include_str!("return.js");

/// The last path segment of the return page (`/{stream}/return`).
pub const RETURN_PAGE_SEGMENT: &str = "return";

/// The page at `/{stream}/return`. With `ice_servers`, the page fetches the
/// STUN and TURN servers from the WHEP endpoint (`GET`, with the key)
/// before offering.
pub fn return_page(stream: &str, ice_servers: bool) -> String {
    let ice = if ice_servers { "fetch" } else { "none" };
    let config = json_object(&[("stream", stream), ("whep", WHEP_SEGMENT), ("ice", ice)]);
    fill(
        RETURN_TEMPLATE,
        &[
            ("stream", &html_escape(stream)),
            ("style", STYLE),
            ("config", &config),
            ("script", RETURN_SCRIPT),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_page_fills_every_marker_and_loads_nothing() {
        let page = return_page("morning-show", false);
        assert!(!page.contains("{{"), "unfilled marker in the page");
        assert!(page.contains("<title>Return morning-show · onair</title>"));
        assert!(page.contains(r#"{"stream":"morning-show","whep":"whep","ice":"none"}"#));
        assert!(return_page("morning-show", true).contains(r#""ice":"fetch""#));
        assert!(page.contains("window.onairReturn = state"));
        for attribute in ["src=", "<link rel=\"stylesheet\"", "@import"] {
            assert!(!page.contains(attribute), "{attribute} in the return page");
        }
        let hostile = return_page("</script><img src=x onerror=alert(1)>", false);
        assert!(!hostile.contains("<img"));
    }
}
