//! The listener pages: `/{stream}/` plays one stream, `/` lists the live
//! ones.
//!
//! Contract:
//! - Pages are self-contained HTML (style and script inline, nothing loaded
//!   from elsewhere) except hls.js, which the listener page loads from the
//!   configured URL, and only in browsers without a native HLS player (or
//!   with `?player=hlsjs`). The project commits no third-party code.
//! - Every name and URL put into a page is escaped for where it goes, with
//!   the kit of [`crate::web::page`]. Stream names are valid layout names
//!   already, but the pages do not rely on it.
//! - The listener page plays `index.m3u8` relative to itself, so it works
//!   behind any path prefix; the script is `page.js`, the style the shared
//!   one.
//!
//! # Chromium's native HLS and multivariant playlists (measured)
//!
//! Measured with Debian's Chromium 156 (headless) against `onair live`
//! (LL-HLS, 1.92 s segments of six 320 ms parts, renditions `aac` at 104 kb/s
//! and `opus` at 85 kb/s):
//!
//! - Chromium 156 has a native HLS player: `canPlayType` says `"maybe"` for
//!   `application/vnd.apple.mpegurl`. It plays whole segments only (no parts,
//!   no blocking reloads: it re-reads the media playlist plainly once per
//!   segment), probes the oldest listed segment first, then starts about
//!   three segments from the live edge: ~6.5 s behind live, against ~1.5 s for
//!   hls.js with parts. It has no `getStartDate()`, `duration` is NaN and
//!   `seekable` is empty; `currentTime` 0 is the start of the first segment
//!   it plays (hence the Resource Timing lookup in `page.js`).
//! - A multivariant playlist with one AAC and one Opus variant fails: after
//!   one or two segments the player switches variant (its bandwidth
//!   adaptation moves between variants whatever their order and BANDWIDTH,
//!   also with equal BANDWIDTH and with one audio group per variant) and the
//!   media element fails with MEDIA_ERR_DECODE, message
//!   `CHUNK_DEMUXER_ERROR_APPEND_FAILED: Audio codec changes not allowed
//!   unless using experimental changeType()`. Switching between two variants
//!   of the same codec works. So any set of variants sharing one codec plays:
//!   AAC only and Opus only both play, live and to the end.
//! - One variant whose audio group holds both renditions plays:
//!   `#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="audio",NAME="AAC",DEFAULT=YES,AUTOSELECT=YES`
//!   (no URI: its media is the variant's own `aac/live.m3u8`),
//!   `#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="audio",NAME="Opus",DEFAULT=NO,AUTOSELECT=YES,URI="opus/live.m3u8"`,
//!   `#EXT-X-STREAM-INF:BANDWIDTH=104000,CODECS="mp4a.40.2,opus",AUDIO="audio"`
//!   then `aac/live.m3u8`. Chromium plays the default (AAC) and never
//!   requests Opus; hls.js plays AAC with Opus offered as audio track 1;
//!   ffmpeg opens both renditions as streams of one program. It needs no
//!   request sniffing and caches as one object.
//! - Request headers, for telling the native player from hls.js: the media
//!   element sends `Sec-Fetch-Dest: audio` (`video` when the URL is opened
//!   directly: Chromium then wraps it in a media document, whose first,
//!   `document` request is not used for playback), `Sec-Fetch-Mode: no-cors`,
//!   `Accept: */*`, `Range: bytes=0-` and `Accept-Encoding: gzip,
//!   identity;q=1, *;q=0` for playlists (`identity` for media). hls.js
//!   (fetch/XHR) sends `Sec-Fetch-Dest: empty`, `Sec-Fetch-Mode: cors`, no
//!   `Range`. But browsers send `Sec-Fetch-*` only to potentially trustworthy
//!   origins (HTTPS, localhost, 127.0.0.0/8): from a plain-HTTP host name
//!   Chromium sent none of them, only the `Range` and `Accept-Encoding` above.
//!   ffmpeg sends `Range: bytes=0-` too, and no `Sec-Fetch-*`. A per-request
//!   choice (single-codec playlist for `Sec-Fetch-Dest: audio|video`, with
//!   `Vary: Sec-Fetch-Dest`) therefore works over HTTPS only, and only behind
//!   CDNs that honour `Vary` on that header; the audio-group form above
//!   works everywhere.

use std::fmt::Write as _;

use crate::web::page::{STYLE, fill, html_escape, json_object, path_segment};

const TEMPLATE: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("page.js");

/// The playlist the listener page plays, relative to the page at `/{stream}/`.
const PLAYLIST: &str = "index.m3u8";

/// The page at `/{stream}/`: plays the stream with the browser's HLS player
/// or with hls.js loaded from `hlsjs_url`, with a play button, the state of
/// the connection, errors, and how far behind live the listener is.
pub fn listener_page(stream: &str, hlsjs_url: &str) -> String {
    let config = json_object(&[
        ("stream", stream),
        ("playlist", PLAYLIST),
        ("hlsjs", hlsjs_url),
    ]);
    fill(
        TEMPLATE,
        &[
            ("stream", &html_escape(stream)),
            ("style", STYLE),
            ("config", &config),
            ("script", SCRIPT),
        ],
    )
}

/// The page at `/`: links to the listener page of each stream in `streams`.
pub fn index_page(streams: &[String]) -> String {
    let mut list = String::new();
    if streams.is_empty() {
        list.push_str("<p class=\"empty\">Nothing is on air right now.</p>\n");
    } else {
        list.push_str("<ul class=\"streams\">\n");
        for stream in streams {
            let _ = writeln!(
                list,
                "<li><a href=\"./{}/\">{}</a></li>",
                html_escape(&path_segment(stream)),
                html_escape(stream)
            );
        }
        list.push_str("</ul>\n");
    }
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <link rel=\"icon\" href=\"data:,\">\n\
         <title>On air · onair</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n\
         <p class=\"kicker\">onair</p>\n<h1>On air</h1>\n{list}</main>\n</body>\n</html>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_page_fills_every_marker() {
        let page = listener_page("morning-show", "/_onair/hls.min.js");
        assert!(!page.contains("{{"), "unfilled marker in the page");
        assert!(page.contains("<title>morning-show · onair</title>"));
        assert!(page.contains("<h1>morning-show</h1>"));
        assert!(page.contains(
            r#"{"stream":"morning-show","playlist":"index.m3u8","hlsjs":"/_onair/hls.min.js"}"#
        ));
        assert!(page.contains("window.onairPlayer = player"));
        assert!(page.contains(".play {"));
    }

    #[test]
    fn hostile_names_and_urls_stay_inert() {
        let page = listener_page(
            "<img src=x onerror=alert(1)>\"'",
            "https://cdn.example/hls.js\"></script><script>alert(1)</script>\u{2028}",
        );
        assert!(!page.contains("<img"));
        assert!(page.contains("&lt;img src=x onerror=alert(1)&gt;&quot;&#39;"));
        // The only `</script>`s are the two the template closes.
        assert_eq!(page.matches("</script>").count(), 2);
        assert!(page.contains(
            r#""hlsjs":"https://cdn.example/hls.js\"\u003e\u003c/script\u003e\u003cscript\u003ealert(1)\u003c/script\u003e\u2028""#
        ));
    }

    #[test]
    fn index_page_links_each_stream_once() {
        let streams = ["morning-show".to_owned(), "a b&<".to_owned()];
        let page = index_page(&streams);
        assert!(page.contains(r#"<li><a href="./morning-show/">morning-show</a></li>"#));
        assert!(page.contains(r#"<li><a href="./a%20b%26%3C/">a b&amp;&lt;</a></li>"#));
        assert_eq!(page.matches("<li>").count(), 2);
        assert!(!page.contains("Nothing is on air"));
    }

    #[test]
    fn index_page_says_when_nothing_is_on_air() {
        let page = index_page(&[]);
        assert!(page.contains("Nothing is on air right now."));
        assert!(!page.contains("<li>"));
    }
}
