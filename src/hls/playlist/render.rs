//! Playlist text from the model: [`MediaPlaylist::render`].
//!
//! Writes the media playlist format of RFC 8216bis section 4: the lines of
//! 4.1, the attribute lists of 4.2 and the tags of 4.4 (basic 4.4.1, media
//! playlist 4.4.3, media segment 4.4.4 including `EXT-X-PART` 4.4.4.9, and
//! the Low-Latency metadata tags `EXT-X-SKIP` 4.4.5.2, `EXT-X-PRELOAD-HINT`
//! 4.4.5.3 and `EXT-X-RENDITION-REPORT` 4.4.5.4), with the `EXT-X-VERSION`
//! of section 8. Durations are written with [`seconds_text`] and dates with
//! [`format_pdt`], the forms the parser reads back exactly.

use std::fmt::Write as _;

use super::{HintType, Map, MediaPlaylist, Part, PlaylistType, ProgramDateTime, format_pdt};
use crate::time::seconds_text;

impl MediaPlaylist {
    /// Writes the playlist text. Tags come in the order Apple's LL-HLS
    /// examples use: header, segments (tags, parts, `EXTINF`, URI), the open
    /// segment's parts, preload hint, rendition reports, end list.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(256 + 128 * self.segments.len());
        // `write!` into a String cannot fail; the results are ignored.
        let _ = writeln!(out, "#EXTM3U");
        let _ = writeln!(out, "#EXT-X-VERSION:{}", self.version());
        let _ = writeln!(out, "#EXT-X-TARGETDURATION:{}", self.target_duration);
        if let Some(sc) = &self.server_control {
            let mut attrs = Vec::new();
            if sc.can_block_reload {
                attrs.push("CAN-BLOCK-RELOAD=YES".to_owned());
            }
            if let Some(v) = sc.can_skip_until {
                attrs.push(format!("CAN-SKIP-UNTIL={}", seconds_text(v)));
            }
            if sc.can_skip_dateranges {
                attrs.push("CAN-SKIP-DATERANGES=YES".to_owned());
            }
            if let Some(v) = sc.hold_back {
                attrs.push(format!("HOLD-BACK={}", seconds_text(v)));
            }
            if let Some(v) = sc.part_hold_back {
                attrs.push(format!("PART-HOLD-BACK={}", seconds_text(v)));
            }
            let _ = writeln!(out, "#EXT-X-SERVER-CONTROL:{}", attrs.join(","));
        }
        if let Some(pt) = self.part_target {
            let _ = writeln!(out, "#EXT-X-PART-INF:PART-TARGET={}", seconds_text(pt));
        }
        let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{}", self.media_sequence);
        let _ = writeln!(
            out,
            "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
            self.discontinuity_sequence
        );
        match self.playlist_type {
            Some(PlaylistType::Event) => out.push_str("#EXT-X-PLAYLIST-TYPE:EVENT\n"),
            Some(PlaylistType::Vod) => out.push_str("#EXT-X-PLAYLIST-TYPE:VOD\n"),
            None => {}
        }
        if self.independent_segments {
            out.push_str("#EXT-X-INDEPENDENT-SEGMENTS\n");
        }
        if let Some(skip) = &self.skip {
            let _ = write!(
                out,
                "#EXT-X-SKIP:SKIPPED-SEGMENTS={}",
                skip.skipped_segments
            );
            if let Some(ids) = &skip.recently_removed_dateranges {
                let _ = write!(out, ",RECENTLY-REMOVED-DATERANGES=\"{}\"", ids.join("\t"));
            }
            out.push('\n');
        }
        for s in &self.segments {
            write_segment_tags(
                &mut out,
                s.discontinuity,
                s.map.as_ref(),
                s.program_date_time,
            );
            for p in &s.parts {
                write_part(&mut out, p);
            }
            if s.gap {
                out.push_str("#EXT-X-GAP\n");
            }
            let _ = writeln!(out, "#EXTINF:{},", seconds_text(s.duration));
            let _ = writeln!(out, "{}", s.uri);
        }
        if let Some(o) = &self.open {
            write_segment_tags(
                &mut out,
                o.discontinuity,
                o.map.as_ref(),
                o.program_date_time,
            );
            for p in &o.parts {
                write_part(&mut out, p);
            }
        }
        if let Some(h) = &self.preload_hint {
            let t = match h.hint_type {
                HintType::Part => "PART",
                HintType::Map => "MAP",
            };
            let _ = writeln!(out, "#EXT-X-PRELOAD-HINT:TYPE={t},URI=\"{}\"", h.uri);
        }
        for r in &self.rendition_reports {
            let _ = write!(
                out,
                "#EXT-X-RENDITION-REPORT:URI=\"{}\",LAST-MSN={}",
                r.uri, r.last_msn
            );
            if let Some(p) = r.last_part {
                let _ = write!(out, ",LAST-PART={p}");
            }
            out.push('\n');
        }
        if self.end_list {
            out.push_str("#EXT-X-ENDLIST\n");
        }
        out
    }
}

/// The tags written ahead of a segment's parts: shared by complete segments
/// and the open one, so a segment's tags read the same before and after it
/// completes.
fn write_segment_tags(
    out: &mut String,
    discontinuity: bool,
    map: Option<&Map>,
    pdt: Option<ProgramDateTime>,
) {
    if discontinuity {
        out.push_str("#EXT-X-DISCONTINUITY\n");
    }
    if let Some(m) = map {
        let _ = writeln!(out, "#EXT-X-MAP:URI=\"{}\"", m.uri);
    }
    if let Some(t) = pdt {
        let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", format_pdt(t));
    }
}

/// One `EXT-X-PART` line (RFC 8216bis 4.4.4.9). `INDEPENDENT` and `GAP` are
/// written only when `YES`, since `NO` is what their absence means.
fn write_part(out: &mut String, p: &Part) {
    let _ = write!(
        out,
        "#EXT-X-PART:DURATION={},URI=\"{}\"",
        seconds_text(p.duration),
        p.uri
    );
    if p.independent {
        out.push_str(",INDEPENDENT=YES");
    }
    if p.gap {
        out.push_str(",GAP=YES");
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::super::tests::sample;

    #[test]
    fn renders_the_expected_text() {
        let text = sample(2).render();
        let expected = "\
#EXTM3U
#EXT-X-VERSION:6
#EXT-X-TARGETDURATION:2
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=12.000,CAN-SKIP-DATERANGES=YES,HOLD-BACK=6.000,PART-HOLD-BACK=0.960
#EXT-X-PART-INF:PART-TARGET=0.320
#EXT-X-MEDIA-SEQUENCE:10
#EXT-X-DISCONTINUITY-SEQUENCE:0
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MAP:URI=\"init.mp4\"
#EXT-X-PROGRAM-DATE-TIME:2025-11-28T03:20:00.000Z
#EXT-X-PART:DURATION=0.320,URI=\"10.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.320,URI=\"10.1.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.320,URI=\"10.2.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.320,URI=\"10.3.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.320,URI=\"10.4.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.320,URI=\"10.5.m4s\",INDEPENDENT=YES
#EXTINF:1.920,
10.m4s
#EXT-X-PROGRAM-DATE-TIME:2025-11-28T03:20:01.920Z
#EXT-X-PART:DURATION=0.320,URI=\"11.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.320,URI=\"11.1.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.320,URI=\"11.2.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.320,URI=\"11.3.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.320,URI=\"11.4.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.320,URI=\"11.5.m4s\",INDEPENDENT=YES
#EXTINF:1.920,
11.m4s
#EXT-X-PROGRAM-DATE-TIME:2025-11-28T03:20:03.840Z
#EXT-X-PART:DURATION=0.320,URI=\"12.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.320,URI=\"12.1.m4s\",INDEPENDENT=YES
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"12.2.m4s\"
#EXT-X-RENDITION-REPORT:URI=\"../aac/live.m3u8\",LAST-MSN=12,LAST-PART=1
";
        assert_eq!(text, expected);
    }
}
