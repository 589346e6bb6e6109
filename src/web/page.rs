//! The kit the built-in pages are made with.
//!
//! Contract:
//! - Pages are self-contained HTML: style and script inline, filled into a
//!   template by [`fill`], which never rescans inserted text for markers.
//! - Every name and URL put into a page is escaped for where it goes: HTML
//!   text and attributes ([`html_escape`]), JSON read by a script
//!   ([`json_string`], [`json_object`], safe inside `<script>`), and link
//!   paths ([`path_segment`]).

use std::fmt::Write as _;

/// The style every page shares (colours, type, buttons); pages add their
/// own after it.
pub const STYLE: &str = include_str!("page.css");

/// Replaces each `{{name}}` of `template` by its value in one pass, so text
/// inserted is never itself scanned for markers. Unknown markers stay.
pub fn fill(template: &str, values: &[(&str, &str)]) -> String {
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
pub fn html_escape(text: &str) -> String {
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
pub fn json_string(text: &str) -> String {
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
pub fn path_segment(name: &str) -> String {
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

/// A JSON object of string members, safe inside `<script>` (see
/// [`json_string`]).
pub fn json_object(members: &[(&str, &str)]) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
