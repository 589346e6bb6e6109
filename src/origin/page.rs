//! The listener pages: `/{stream}/` plays one stream, `/` lists the live ones;
//! and the host studio, `/{stream}/host`, which publishes a browser's
//! microphone to the stream over WHIP.
//!
//! Contract:
//! - Pages are self-contained HTML (style and script inline, nothing loaded
//!   from elsewhere) except hls.js, which the listener page loads from the
//!   configured URL, and only in browsers without a native HLS player (or
//!   with `?player=hlsjs`). The project commits no third-party code.
//! - Every name and URL put into a page is escaped for where it goes: HTML
//!   text and attributes ([`html_escape`]), the JSON configuration read by the
//!   script ([`json_string`], safe inside `<script>`), and link paths
//!   (percent-encoded). Stream names are [`crate::packager::valid_name`]s
//!   already, but the pages do not rely on it.
//! - The listener page plays `index.m3u8` relative to itself, so it works
//!   behind any path prefix; the script is `page.js`, the style `page.css`.
//! - The host page POSTs its WHIP offer (RFC 9725) to `whip` relative to
//!   itself (`/{stream}/whip`), so it works behind any prefix too; it loads
//!   nothing at all from elsewhere. Its script is `host.js`, its style
//!   `page.css` and `host.css`. The host's key is typed in or read from the
//!   URL fragment by the script: it is never in the page the server sends.
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

const TEMPLATE: &str = include_str!("page.html");
const STYLE: &str = include_str!("page.css");
const SCRIPT: &str = include_str!("page.js");
const HOST_TEMPLATE: &str = include_str!("host.html");
const HOST_STYLE: &str = include_str!("host.css");
const HOST_SCRIPT: &str = include_str!("host.js");

/// The playlist the listener page plays, relative to the page at `/{stream}/`.
const PLAYLIST: &str = "index.m3u8";
/// The WHIP endpoint the host page publishes to, relative to the page at
/// `/{stream}/host`.
const WHIP_ENDPOINT: &str = "whip";

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

/// The page at `/{stream}/host`: asks for the microphone and publishes it to
/// the stream's live mix over WHIP with the host's key, with a level meter, a
/// mute switch, the connection's state and an "on air" indicator.
pub fn host_page(stream: &str) -> String {
    let config = json_object(&[("stream", stream), ("whip", WHIP_ENDPOINT)]);
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

/// A JSON object of string members, safe inside `<script>` (see
/// [`json_string`]).
fn json_object(members: &[(&str, &str)]) -> String {
    let mut object = String::from("{");
    for (i, (key, value)) in members.iter().enumerate() {
        if i > 0 {
            object.push(',');
        }
        let _ = write!(object, "{}:{}", json_string(key), json_string(value));
    }
    object.push('}');
    object
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

/// Replaces each `{{name}}` of `template` by its value in one pass, so text
/// inserted is never itself scanned for markers. Unknown markers stay.
fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out =
        String::with_capacity(template.len() + values.iter().map(|v| v.1.len()).sum::<usize>());
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let value = after.find("}}").and_then(|close| {
            let name = &after[..close];
            values
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value, close + 2))
        });
        match value {
            Some((value, used)) => {
                out.push_str(value);
                rest = &after[used..];
            }
            None => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Escapes text for HTML element content and quoted attribute values.
fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A JSON string literal (RFC 8259 section 7) that is also safe inside an
/// HTML `<script>` element: `<`, `>` and `&` are escaped so no `</script>` or
/// `<!--` can appear, and U+2028/U+2029 so old JavaScript parsers agree.
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' | '\0'..='\u{1f}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Percent-encodes everything but RFC 3986 unreserved characters, so a name
/// is exactly one path segment.
fn path_segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
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
    fn host_page_fills_every_marker_and_loads_nothing() {
        let page = host_page("morning-show");
        assert!(!page.contains("{{"), "unfilled marker in the page");
        assert!(page.contains("<title>Host morning-show · onair</title>"));
        assert!(page.contains("<h1>morning-show</h1>"));
        assert!(page.contains(r#"{"stream":"morning-show","whip":"whip"}"#));
        assert!(page.contains("window.onairHost = host"));
        assert!(page.contains(".play {"), "the listener page's style");
        assert!(page.contains(".on-air {"), "the host page's style");
        // Self-contained: no script, style or image from anywhere.
        for attribute in ["src=", "<link rel=\"stylesheet\"", "@import"] {
            assert!(!page.contains(attribute), "{attribute} in the host page");
        }
    }

    #[test]
    fn host_page_keeps_hostile_names_inert() {
        let page = host_page("</script><img src=x onerror=alert(1)>");
        assert!(!page.contains("<img"));
        assert_eq!(page.matches("</script>").count(), 2);
        assert!(page.contains(r#""stream":"\u003c/script\u003e\u003cimg"#));
    }

    #[test]
    fn json_strings_escape_controls_and_quotes() {
        assert_eq!(json_string("a\"b\\c\n\u{1}"), r#""a\"b\\c\n\u0001""#);
        assert_eq!(json_string("é"), "\"é\"");
    }

    #[test]
    fn fill_does_not_rescan_inserted_text() {
        assert_eq!(
            fill("<{{a}}|{{b}}|{{c}}>", &[("a", "{{b}}"), ("b", "B")]),
            "<{{b}}|B|{{c}}>"
        );
        assert_eq!(fill("{{a", &[("a", "A")]), "{{a");
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
